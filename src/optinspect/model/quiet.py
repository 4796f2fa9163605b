"""Keeping third-party warnings, log lines and progress bars out of the output."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

__all__ = ["quiet"]


@contextlib.contextmanager
def quiet(verbose: bool) -> Iterator[None]:
    """Keep third-party warnings, log lines and progress bars out of the output."""
    if verbose:
        yield
        return
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
