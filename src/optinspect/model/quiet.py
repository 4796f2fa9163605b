"""Keeping third-party noise and hub code out: log lines, warnings, progress bars, hub kernels."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from typing import Any

__all__ = ["no_hub_kernels", "quiet"]

# The package through which bitsandbytes (on CPUs with AVX512-BF16) and transformers
# download and run compiled code from the Hugging Face hub.
HUB_KERNELS_PACKAGE = "kernels"
_ABSENT: Any = object()


@contextlib.contextmanager
def no_hub_kernels() -> Iterator[None]:
    """While inside, no library can import ``kernels``, so none runs code from the hub.

    A ``None`` in ``sys.modules`` makes ``import kernels`` raise ImportError and
    ``importlib.util.find_spec`` answer None, so transformers takes its stubs and
    bitsandbytes its own CPU kernels, which both decide once, when they are
    imported. ``USE_HUB_KERNELS=NO`` turns off transformers' default kernel swaps
    at ``from_pretrained``. Both are put back on the way out, so a notebook that
    imports ``kernels`` itself afterwards still can.
    """
    prefix = HUB_KERNELS_PACKAGE + "."
    names = {HUB_KERNELS_PACKAGE, *(n for n in sys.modules if n.startswith(prefix))}
    saved = {name: sys.modules.get(name, _ABSENT) for name in names}
    env = os.environ.get("USE_HUB_KERNELS", _ABSENT)
    sys.modules.update(dict.fromkeys(names))
    os.environ["USE_HUB_KERNELS"] = "NO"
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is _ABSENT:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
        if env is _ABSENT:
            os.environ.pop("USE_HUB_KERNELS", None)
        else:
            os.environ["USE_HUB_KERNELS"] = env


@contextlib.contextmanager
def quiet(verbose: bool) -> Iterator[None]:
    """Keep third-party warnings, log lines and progress bars out of the output.

    Hub kernels are kept out whether or not ``verbose`` is set: it shows what the
    libraries say, it never lets them fetch code.
    """
    with no_hub_kernels():
        if verbose:
            yield
            return
        with _silenced():
            yield


@contextlib.contextmanager
def _silenced() -> Iterator[None]:
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    progress_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    disable_progress_bars()
    previous_disable = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous_disable)
        hf_logging.set_verbosity(level)
        if progress_was_on:
            hf_logging.enable_progress_bar()
            enable_progress_bars()
