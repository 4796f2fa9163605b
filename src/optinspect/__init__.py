"""optinspect: look inside decoder language models, module by module.

    import optinspect as oi
    model = oi.load("facebook/opt-125m", quant="8bit")
    oi.trace(model, ["first sentence", "second"], layer="0")   # shows itself in Jupyter

Public names: one function per command (load, trace, params, tree, compare, outliers,
lens, attention, calibrate, report; docs/api.md), iter_trace, LoadedModel, TraceResult,
ModuleRecord, TensorStats, Token. They are imported lazily, so ``import optinspect``
(and ``optinspect --help``) does not import torch.
"""

from __future__ import annotations

import time
from importlib import import_module
from typing import TYPE_CHECKING, Any

#: When optinspect's own code started; ``--timings`` counts import time from here.
STARTED = time.perf_counter()

__version__ = "0.1.0"

#: The API's functions, one per command (``optinspect.api``).
API = (
    "load",
    "trace",
    "params",
    "tree",
    "compare",
    "outliers",
    "lens",
    "attention",
    "calibrate",
    "report",
)

_LAZY = {
    **dict.fromkeys(API, "optinspect.api"),
    "iter_trace": "optinspect.analyses.trace",
    "LoadedModel": "optinspect.model.loading",
    "TraceResult": "optinspect.results.trace",
    "ModuleRecord": "optinspect.results.records",
    "TensorStats": "optinspect.results.records",
    "Token": "optinspect.results.records",
}

__all__ = [
    "LoadedModel",
    "ModuleRecord",
    "TensorStats",
    "Token",
    "TraceResult",
    "attention",
    "calibrate",
    "compare",
    "iter_trace",
    "lens",
    "load",
    "outliers",
    "params",
    "report",
    "trace",
    "tree",
]

if TYPE_CHECKING:
    from .analyses.trace import iter_trace
    from .api import (
        attention,
        calibrate,
        compare,
        lens,
        load,
        outliers,
        params,
        report,
        trace,
        tree,
    )
    from .model.loading import LoadedModel
    from .results.records import ModuleRecord, TensorStats, Token
    from .results.trace import TraceResult


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'optinspect' has no attribute {name!r}")
