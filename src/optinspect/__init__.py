"""optinspect: look inside OPT language models, module by module.

    from optinspect import load, trace
    model = load("facebook/opt-125m", quant="8bit")
    result = trace(model, ["first sentence", "second"], layers=[0])

Public names: load, trace, iter_trace, LoadedModel, TraceResult, ModuleRecord,
TensorStats, Token. They are imported lazily, so ``import optinspect`` (and
``optinspect --help``) does not import torch.
"""

from __future__ import annotations

import time
from importlib import import_module
from typing import TYPE_CHECKING, Any

#: When optinspect's own code started; ``--timings`` counts import time from here.
STARTED = time.perf_counter()

__version__ = "0.1.0"

_LAZY = {
    "load": "optinspect.api",
    "trace": "optinspect.api",
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
    "iter_trace",
    "load",
    "trace",
]

if TYPE_CHECKING:
    from .analyses.trace import iter_trace
    from .api import load, trace
    from .model.loading import LoadedModel
    from .results.records import ModuleRecord, TensorStats, Token
    from .results.trace import TraceResult


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'optinspect' has no attribute {name!r}")
