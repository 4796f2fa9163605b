"""Files written atomically (a temporary file beside the target, then a rename), and the
store of full output tensors that ``trace --save`` writes as safetensors.

    write_atomic(Path("out.json"), lambda tmp: tmp.write_text("{}"))

A failed or interrupted write leaves no partial file and no temporary behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from ..results.trace import TraceResult

__all__ = ["ActivationStore", "umask", "write_atomic"]


def write_atomic(path: Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place.

    The file gets the permissions a plain ``open`` would give it (0666 less the
    umask), not the private 0600 of a temporary file; a file it replaces keeps
    its own permissions.
    """
    mode = stat.S_IMODE(path.stat().st_mode) if path.is_file() else 0o666 & ~umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def umask() -> int:
    """This process's umask."""
    mask = os.umask(0)  # the only way to read it is to set it; put it back at once
    os.umask(mask)
    return mask


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
        self.metadata[f"{index}/text"] = result.text or ""
        self.metadata[f"{index}/tokens"] = json.dumps([t.id for t in result.tokens])

    def write(self, path: Path, *, model: str, quant: str) -> None:
        """Write every tensor and the metadata to ``path``, atomically."""
        from safetensors.torch import save_file

        metadata = {"format": "pt", "model": model, "quant": quant, **self.metadata}
        write_atomic(path, lambda tmp: save_file(self.tensors, str(tmp), metadata=metadata))
