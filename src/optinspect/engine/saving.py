"""Saving full output tensors to safetensors, atomically: a temporary file, then a rename."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

import torch

from ..errors import UsageError
from .records import TraceResult

__all__ = ["ActivationStore", "check_writable"]


def check_writable(path: Path, force: bool) -> None:
    """Refuse to overwrite without ``force``; checked before any model is loaded."""
    if path.exists() and not force:
        raise UsageError(f"{path} exists: use --force to overwrite it")
    if not path.parent.exists():
        raise UsageError(f"folder {path.parent} does not exist")


class ActivationStore:
    """Collects tensors keyed ``sentence_index/module_name`` and writes them in one go.

    A module called more than once gets ``#call`` appended from its second call on.
    Tensors are copied to the CPU as they arrive; only the selected modules are kept.
    """

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self.metadata: dict[str, str] = {}

    def add(self, sentence: int, name: str, call: int, tensor: torch.Tensor) -> None:
        key = f"{sentence}/{name}" + (f"#{call}" if call else "")
        self.tensors[key] = tensor.detach().to("cpu", copy=True).contiguous()

    def describe(self, index: int, result: TraceResult) -> None:
        """Record a sentence's text and tokens in the file's metadata."""
        self.metadata[f"{index}/text"] = result.text
        self.metadata[f"{index}/tokens"] = json.dumps([t.id for t in result.tokens])

    def write(self, path: Path, *, model: str, quant: str) -> None:
        """Write to a temporary file beside ``path``, then rename it into place."""
        from safetensors.torch import save_file

        metadata = {"format": "pt", "model": model, "quant": quant, **self.metadata}
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            save_file(self.tensors, tmp, metadata=metadata)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
