"""Where a model runs: devices, accelerate device maps, memory caps and offloaded weights;
and the checks of those options that need no weights (``check_placement``), which
preflight runs before loading and the loader again for callers of the Python API."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UsageError, os_reason
from .names import adapter_of

if TYPE_CHECKING:  # torch is imported where a device is resolved: the checks need none
    import torch
    from torch import nn

__all__ = [
    "DEVICE_MAPS",
    "check_new_file",
    "check_offload_dir",
    "check_placement",
    "input_device",
    "mapped_device",
    "parse_max_memory",
    "placement_name",
    "placement_of",
    "resolve_device",
]

DEVICE_MAPS = ("auto", "balanced", "sequential")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)", re.IGNORECASE)
#: Bytes per unit. KB is 1000 bytes and KiB 1024, in any case: a size is never read as
#: bits (accelerate reads a lowercase "kb" as kilobits), and every unit here is one
#: accelerate cannot misread, because it gets a byte count.
_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_UNITS.update({f"{u[0]}IB": 1024 ** (i + 1) for i, u in enumerate(("KB", "MB", "GB", "TB"))})


def resolve_device(device: str) -> str:
    """``auto`` means CUDA when present, else the CPU; explicit devices are checked."""
    device = device.strip().lower()
    if device == "auto":
        return mapped_device()
    if device == "cpu":
        return device
    match = re.fullmatch(r"cuda(?::(\d+))?", device)
    if not match:
        raise UsageError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N")
    import torch

    if not torch.cuda.is_available():
        raise UsageError(f"device {device} was asked for, but CUDA is not available here")
    if match.group(1) is not None and int(match.group(1)) >= torch.cuda.device_count():
        raise UsageError(
            f"device {device} does not exist: this machine has {torch.cuda.device_count()} GPU(s)"
        )
    return device


def mapped_device() -> str:
    """The compute device a device map starts from, for picking the dtype."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def parse_max_memory(spec: str) -> dict[int | str, int]:
    """``"cuda:0=10GiB,cpu=30GiB"`` -> accelerate's ``{0: 10737418240, "cpu": 32212254720}``.

    Sizes become byte counts here, so what accelerate receives means what was typed.
    """
    usage = (
        f"cannot read --max-memory {spec!r}: use DEVICE=SIZE pairs like 'cuda:0=10GiB,cpu=30GiB'"
    )
    memory: dict[int | str, int] = {}
    for item in spec.split(","):
        key, sep, size = (part.strip() for part in item.partition("="))
        key = key.lower()
        found = _SIZE.fullmatch(size)
        if not sep or found is None:
            raise UsageError(usage)
        count = int(float(found.group(1)) * _UNITS[found.group(2).upper()])
        if key in ("cpu", "disk"):
            memory[key] = count
        elif (match := re.fullmatch(r"(?:cuda:)?(\d+)", key)) is not None:
            memory[int(match.group(1))] = count
        else:
            raise UsageError(usage)
    return memory


def check_placement(
    device: str,
    device_map: str | None,
    *,
    quant: str = "none",
    max_memory: str | None = None,
    offload_dir: str | None = None,
) -> None:
    """Placement options that cannot work, refused before any weight is read.

    A device map places the model itself, so a device beside it would be ignored;
    ``--max-memory`` must parse; and offloading quantized layers needs CUDA:
    accelerate moves an offloaded 8-bit or 4-bit weight through the GPU each time
    it runs, so without one it would fail in the middle of the forward pass.
    """
    device = device.strip().lower()
    device_map = device_map.strip().lower() if device_map is not None else None
    if device_map is not None and device != "auto":
        raise UsageError(
            f"give --device or --device-map, not both: the map {device_map!r} places the model"
        )
    if device_map is not None and device_map not in DEVICE_MAPS:
        raise UsageError(f"unknown device map {device_map!r}: use {', '.join(DEVICE_MAPS)}")
    if max_memory is not None:
        parse_max_memory(max_memory)
    if offload_dir is not None:
        check_offload_dir(offload_dir)
    if (max_memory is not None or offload_dir is not None) and quant != "none":
        import torch

        if not torch.cuda.is_available():
            raise UsageError(
                f"--quant {quant} cannot offload weights without CUDA (bitsandbytes moves "
                "them through a GPU): use --quant none with --max-memory or --offload-dir "
                "on the CPU"
            )


def check_offload_dir(path: str | Path) -> Path:
    """``--offload-dir``: a folder that takes a new file, or one that can be made (with its
    missing parents, as accelerate does) in a folder that does."""
    folder = Path(path).expanduser().absolute()
    try:
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"--offload-dir {path} is a file: give a folder")
        existing = folder
        while not existing.exists():
            existing = existing.parent
        is_dir = existing.is_dir()
    except OSError as e:  # a folder on the way that this user cannot enter
        raise UsageError(f"--offload-dir {path} cannot be written: {os_reason(e)}") from e
    if not is_dir:
        raise UsageError(f"--offload-dir {path} cannot be written: {existing} is a file")
    check_new_file(existing, f"--offload-dir {path} cannot be written")
    return folder


def check_new_file(folder: Path, what: str, *, prefix: str = ".optinspect.") -> None:
    """Refuse ``folder`` unless it takes a new file; ``what`` begins the message. The only
    sure test is to make one (a temporary file, removed at once): permission bits say
    yes to root for a read-only folder, and an ACL or a full disk can say no."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=prefix):
            pass
    except OSError as e:
        raise UsageError(f"{what}: folder {folder} takes no new file ({os_reason(e)})") from e


def input_device(model: nn.Module) -> torch.device:
    """Where the token ids must go: the execution device of the token embedding.

    An embedding that accelerate offloaded (to the CPU or disk) has its weight
    on the meta device; accelerate runs offloaded modules on the map's first
    GPU when it has one (``dispatch_model``'s main device), else on the CPU. A
    model built on the meta device with no device map runs there.
    """
    weight = model.get_input_embeddings().weight
    if weight.device.type != "meta":
        return weight.device
    device_map = getattr(model, "hf_device_map", None)
    if not device_map:
        return weight.device
    import torch

    where = placement_of(device_map, adapter_of(model).token_embeddings)
    if _is_gpu(where):
        return torch.device(placement_name(where))
    first_gpu = next((w for w in device_map.values() if _is_gpu(w)), None)
    return torch.device(placement_name(first_gpu) if first_gpu is not None else "cpu")


def _is_gpu(where: object) -> bool:
    return isinstance(where, int) or (isinstance(where, str) and where.startswith("cuda"))


def placement_name(where: object) -> str:
    """A device map entry as a device name: ``0`` -> ``cuda:0``; ``cpu``, ``disk`` as they are."""
    return f"cuda:{where}" if isinstance(where, int) else str(where)


def placement_of(device_map: dict[str, Any] | None, name: str) -> Any:
    """The entry of an accelerate device map that covers module ``name`` (longest prefix)."""
    if not device_map:
        return None
    best = None
    for prefix, where in device_map.items():
        covers = prefix == "" or name == prefix or name.startswith(prefix + ".")
        if covers and (best is None or len(prefix) > len(best[0])):
            best = (prefix, where)
    return best[1] if best is not None else None
