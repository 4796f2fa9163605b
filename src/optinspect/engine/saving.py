"""Safetensors files written as their tensors come: ``trace --save`` and ``calibrate --out``;
``torch.save`` files likewise. Each is written atomically (``results.files.write_atomic``).

    with SafetensorsWriter(Path("acts.safetensors")) as writer:
        writer.add("0/model.decoder.layers.0", tensor)   # on disk now, not kept
        writer.finish({"model": "tiny"})

A failed or interrupted write leaves no partial file and no temporary behind.
"""

from __future__ import annotations

import json
import struct
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Self

from ..results.files import write_atomic

if TYPE_CHECKING:
    import torch

    from ..results.trace import TraceResult

__all__ = [
    "ActivationStore",
    "SafetensorsWriter",
    "save_safetensors",
    "save_torch",
]


#: safetensors' names of the dtypes it stores.
_DTYPES = {
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint64": "U64",
    "uint32": "U32",
    "uint16": "U16",
    "uint8": "U8",
    "bool": "BOOL",
}
#: Bytes copied from a spool to the file at a time.
_CHUNK = 1 << 20


@dataclass(frozen=True)
class _Entry:
    """Where one tensor's bytes sit in the spool of its element size."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    size: int


class _Closing:
    """A ``with`` block's end calls ``close()``, on every path."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        raise NotImplementedError


class SafetensorsWriter(_Closing):
    """A safetensors file whose tensors go to disk as they are added, so memory holds one
    tensor at a time, whatever the file's size.

    The format puts a header with every tensor's offsets before the data, so the data
    is spooled to unnamed temporary files beside the target (one per element size, so
    each tensor starts at a multiple of its own, as safetensors lays them out) and
    copied after the header by ``finish``: the disk holds the data twice until then.
    The same tensors and metadata give the same bytes: the header lists the tensors in
    the order they came (larger elements first) and the metadata in the order given.
    Read it with ``safetensors.safe_open`` as any safetensors file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._spools: dict[int, IO[bytes]] = {}
        self._entries: dict[int, list[_Entry]] = {}
        self._names: set[str] = set()

    def add(self, name: str, tensor: torch.Tensor) -> None:
        """Write ``tensor`` (any device) to the spool; nothing of it is kept."""
        if name in self._names:
            raise ValueError(f"a tensor named {name!r} is in the file already")
        import torch

        dtype = _DTYPES.get(str(tensor.dtype).removeprefix("torch."))
        if dtype is None:
            raise TypeError(f"safetensors cannot store {tensor.dtype} ({name})")
        data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
        width = tensor.element_size()
        spool = self._spools.get(width)
        if spool is None:
            # Open until close(): the writer's own lifetime is the with block.
            spool = self._spools[width] = tempfile.TemporaryFile(  # noqa: SIM115
                dir=self.path.parent, prefix=f".{self.path.name}."
            )
            self._entries[width] = []
        start = spool.tell()
        spool.write(memoryview(data.numpy()))
        self._entries[width].append(_Entry(name, dtype, tuple(tensor.shape), start, data.numel()))
        self._names.add(name)

    def header(self, metadata: Mapping[str, str]) -> bytes:
        """The length and the JSON header of the file, padded with spaces to 8 bytes."""
        described: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
        offset = 0
        for width in sorted(self._entries, reverse=True):
            for entry in self._entries[width]:
                described[entry.name] = {
                    "dtype": entry.dtype,
                    "shape": list(entry.shape),
                    "data_offsets": [offset, offset + entry.size],
                }
                offset += entry.size
        text = json.dumps(described, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        text += b" " * (-len(text) % 8)
        return struct.pack("<Q", len(text)) + text

    def finish(self, metadata: Mapping[str, str]) -> None:
        """Write the file at ``path``, atomically: the header, then every spooled tensor."""
        for key, value in metadata.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError(f"safetensors metadata holds strings only, not {key!r}: {value!r}")

        def write(tmp: Path) -> None:
            buffer = bytearray(_CHUNK)  # one buffer for the whole copy, whatever its size
            chunk = memoryview(buffer)
            with tmp.open("wb") as out:
                out.write(self.header(metadata))
                for width in sorted(self._spools, reverse=True):
                    spool = self._spools[width]
                    spool.flush()
                    spool.seek(0)
                    while count := spool.readinto(buffer):
                        out.write(chunk[:count])

        write_atomic(self.path, write)

    def close(self) -> None:
        """Remove the spools (unnamed: the system removes them when they close)."""
        for spool in self._spools.values():
            spool.close()
        self._spools.clear()
        self._entries.clear()


def save_safetensors(
    path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]
) -> None:
    """``tensors`` and ``metadata`` to ``path``, atomically, in the bytes the same values
    always give (``safetensors.torch.save_file`` orders the metadata differently from
    one run to the next)."""
    with SafetensorsWriter(path) as writer:
        for name, tensor in tensors.items():
            writer.add(name, tensor)
        writer.finish(metadata)


def save_torch(path: Path, value: object) -> None:
    """``torch.save(value)`` to ``path``, atomically, in the bytes the same value always
    gives: written through a file object, since given a path torch names the folder
    inside its zip archive after the file, and the temporary file's name is random."""
    import torch

    def write(tmp: Path) -> None:
        with tmp.open("wb") as out:
            torch.save(value, out)

    write_atomic(path, write)


class ActivationStore(_Closing):
    """The file of ``trace --save``: tensors keyed ``sentence_index/module_name``, written
    to disk as they arrive, and each sentence's text and tokens in the metadata.

    A module called more than once gets ``#call`` appended from its second call on.
    Only the selected modules' outputs come; none is kept in memory.
    """

    def __init__(self, path: Path) -> None:
        self.writer = SafetensorsWriter(path)
        self.metadata: dict[str, str] = {}

    def close(self) -> None:
        """Remove what was spooled; after ``write`` only the file stays."""
        self.writer.close()

    def add(self, sentence: int, name: str, call: int, tensor: torch.Tensor) -> None:
        self.writer.add(f"{sentence}/{name}" + (f"#{call}" if call else ""), tensor)

    def describe(self, index: int, result: TraceResult) -> None:
        """Record a sentence's text and tokens in the file's metadata."""
        self.metadata[f"{index}/text"] = result.text or ""
        self.metadata[f"{index}/tokens"] = json.dumps([t.id for t in result.tokens])

    def write(self, *, model: str, quant: str) -> None:
        """Write the file: the header, then every tensor added, atomically."""
        self.writer.finish({"format": "pt", "model": model, "quant": quant, **self.metadata})
