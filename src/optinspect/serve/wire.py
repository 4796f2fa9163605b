"""What travels on the server's socket: frames of JSON, and the records inside them.

**Framing.** Each message is one frame: a 4-byte big-endian unsigned length, then that
many bytes of UTF-8 JSON holding one object. ``send`` writes one; ``receive`` reads one,
or returns None at a clean end of stream.

**Records.** Results are frozen dataclasses of plain values (``optinspect.results``).
``encode`` turns one into JSON values that keep everything JSON would lose, so that
``decode(encode(r)) == r`` and the client draws exactly what a local run draws:

- a dataclass is ``{"$record": "module:Class", "fields": {...}}``; only classes of the
  modules in ``RECORD_MODULES`` are rebuilt;
- a tuple is ``{"$tuple": [...]}``, a dict ``{"$dict": [[key, value], ...]}`` (any keys,
  in order), bytes ``{"$bytes": "<base64>"}``;
- a float that JSON cannot hold is ``{"$float": "nan" | "inf" | "-inf"}``; other floats
  are JSON numbers, which Python writes and reads back to the same double.

Anything else (a tensor, say) is refused with ``TypeError``: it must not be sent.
"""

from __future__ import annotations

import base64
import dataclasses
import importlib
import json
import math
import socket
import struct
from typing import Any

__all__ = ["RECORD_MODULES", "WireError", "decode", "encode", "receive", "send"]

_HEADER = struct.Struct("!I")
#: The largest frame either side accepts (a 50k-token trace is a few MB).
MAX_FRAME = 1 << 30
#: The modules whose dataclasses may be rebuilt from a frame; none imports torch.
RECORD_MODULES = ("optinspect.results.",)


class WireError(Exception):
    """A frame that is cut short, too large, or not the JSON object it should be."""


def send(sock: socket.socket, message: dict[str, Any]) -> None:
    """Write one frame holding ``message``."""
    body = json.dumps(message, ensure_ascii=False, allow_nan=False).encode("utf-8")
    if len(body) > MAX_FRAME:
        raise WireError(f"a frame of {len(body)} bytes is over the {MAX_FRAME}-byte limit")
    sock.sendall(_HEADER.pack(len(body)) + body)


def receive(sock: socket.socket) -> dict[str, Any] | None:
    """Read one frame; None when the peer closed the connection between frames."""
    header = _read_exactly(sock, _HEADER.size, allow_eof=True)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME:
        raise WireError(f"a frame of {size} bytes is over the {MAX_FRAME}-byte limit")
    body = _read_exactly(sock, size, allow_eof=False)
    assert body is not None
    try:
        message = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WireError(f"a frame is not UTF-8 JSON: {e}") from e
    if not isinstance(message, dict):
        raise WireError("a frame holds JSON that is not an object")
    return message


def _read_exactly(sock: socket.socket, size: int, *, allow_eof: bool) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(min(size - len(chunks), 1 << 20))
        if not chunk:
            if allow_eof and not chunks:
                return None
            raise WireError("the connection closed in the middle of a frame")
        chunks += chunk
    return bytes(chunks)


def encode(value: Any) -> Any:
    """``value`` as JSON values that ``decode`` turns back into an equal value."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return {"$float": "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}
    if isinstance(value, list):
        return [encode(item) for item in value]
    if isinstance(value, tuple):
        return {"$tuple": [encode(item) for item in value]}
    if isinstance(value, dict):
        return {"$dict": [[encode(k), encode(v)] for k, v in value.items()]}
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        cls = type(value)
        fields = {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"$record": f"{cls.__module__}:{cls.__qualname__}", "fields": fields}
    raise TypeError(f"cannot send a {type(value).__name__} to the client")


def decode(value: Any) -> Any:
    """The value ``encode`` was given."""
    if isinstance(value, list):
        return [decode(item) for item in value]
    if not isinstance(value, dict):
        return value
    if "$record" in value:
        return _record(value["$record"], value["fields"])
    if "$tuple" in value:
        return tuple(decode(item) for item in value["$tuple"])
    if "$dict" in value:
        return {decode(k): decode(v) for k, v in value["$dict"]}
    if "$bytes" in value:
        return base64.b64decode(value["$bytes"])
    if "$float" in value:
        return float(value["$float"])
    raise WireError(f"an encoded value has no known tag: {sorted(value)}")


def _record(name: str, fields: dict[str, Any]) -> Any:
    module_name, _, qualname = name.partition(":")
    if not module_name.startswith(RECORD_MODULES):
        raise WireError(f"{name} is not a record the client rebuilds")
    cls: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        cls = getattr(cls, part)
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise WireError(f"{name} is not a record")
    values = {key: decode(item) for key, item in fields.items()}
    init = {f.name for f in dataclasses.fields(cls) if f.init}
    record = cls(**{k: v for k, v in values.items() if k in init})
    for key, item in values.items():
        if key not in init:
            object.__setattr__(record, key, item)
    return record
