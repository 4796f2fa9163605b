"""Comparing one model under two settings (quantization, dtype), module by module.

    load = lambda quant, dtype: load_model("tiny", quant=quant, dtype=dtype, device="cpu")
    result = compare_settings(load, "The quick brown fox", setting=Setting("8bit", "auto"),
                              reference=Setting("none", "auto"), layers="0")
    result.first_exceeding            # the first module whose error passes the tolerance

``load(quant, dtype)`` returns a ``LoadedModel``; the comparison owns the
models' lifetimes so that two full models never sit on one device together:

1. the reference setting is loaded and run once; the full output of every
   selected module call is copied to the CPU as it is produced (in its own
   dtype) and nothing else is kept;
2. the reference model is dropped (``del``, ``gc.collect()``,
   ``torch.cuda.empty_cache()`` on CUDA) before the other setting loads;
3. the other setting runs the same token ids; as each selected module call
   finishes, its output is compared with the stored reference output on the
   device, and that reference tensor is dropped at once. Only three numbers
   per module call survive the pass; they reach the host in one transfer.

Peak memory is one model on the device plus the selected reference outputs on
the host. When both settings are the same, the model is loaded once and run
twice.

Metrics, on the outputs flattened and read in float32, with a the output
under the compared setting and b the reference (the ``--against`` setting):

- cosine: a.b / (||a|| ||b||); 1 when a and b are equal, null when one of
  them is all zeros and the other is not;
- rel_error: ||a - b|| / ||b||; 0 when equal, null when b is all zeros and
  a is not;
- max_abs_diff: max |a - b|.

Any NaN or Inf in a or b makes all three null (as does a result that overflows
float32). A module call exceeds the tolerance when its rel_error is above it
or undefined (null), and also when the reference never made that call or its
output had another shape.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .engine.capture import capture
from .engine.records import ModuleRecord, Token
from .errors import UsageError
from .model.loading import LoadedModel, resolve_dtype
from .tracing import encode, resolve_modules

__all__ = [
    "COMPARE_SCHEMA",
    "CompareResult",
    "ModuleDiff",
    "Setting",
    "check_tolerance",
    "compare_settings",
    "compare_tensors",
]

#: Version of the compare JSON layout; bumped only when a key is removed or changes meaning.
COMPARE_SCHEMA = 1

#: Loads the model under (quant, dtype); the comparison decides when.
Loader = Callable[[str, str], LoadedModel]

#: Row status: both settings produced a tensor of the same shape and it was compared.
COMPARED = "compared"


@dataclass(frozen=True)
class Setting:
    """How a model is loaded: quantization (8bit, 4bit, none) and dtype (may be auto)."""

    quant: str
    dtype: str

    def as_dict(self) -> dict[str, str]:
        return {"quant": self.quant, "dtype": self.dtype}


@dataclass(frozen=True)
class ModuleDiff:
    """One module call under both settings and how far apart its outputs are.

    ``status`` is ``compared``, or why there are no metrics: ``no tensor``
    (the module returned none), ``not in reference`` (the reference never
    made this call), ``shape mismatch``.
    """

    index: int
    name: str
    type: str
    reference_type: str | None
    layer: int | None
    call: int
    depth: int
    finished: int  # position in the order calls finished: a child before its parent
    shape: tuple[int, ...] | None
    status: str
    cosine: float | None
    rel_error: float | None
    max_abs_diff: float | None
    exceeds: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "reference_type": self.reference_type,
            "layer": self.layer,
            "call": self.call,
            "shape": list(self.shape) if self.shape is not None else None,
            "status": self.status,
            "cosine": self.cosine,
            "rel_error": self.rel_error,
            "max_abs_diff": self.max_abs_diff,
            "exceeds": self.exceeds,
        }


@dataclass(frozen=True)
class CompareResult:
    """Every selected module call of one sentence, compared across two settings."""

    model: str
    device: str
    random_weights: bool
    text: str
    tokens: tuple[Token, ...]
    setting: Setting  # resolved: dtype is never auto
    reference: Setting
    tolerance: float
    modules: tuple[ModuleDiff, ...]

    @property
    def first_exceeding(self) -> ModuleDiff | None:
        """The earliest module call to *finish* whose error exceeds the tolerance.

        Finishing order, not start order, so when a layer and its fc1 both
        exceed it, fc1 is named rather than the layer that contains it.
        """
        return min((m for m in self.modules if m.exceeds), key=lambda m: m.finished, default=None)

    def as_dict(self) -> dict[str, Any]:
        first = self.first_exceeding
        return {
            "schema": COMPARE_SCHEMA,
            "model": self.model,
            "device": self.device,
            "random_weights": self.random_weights,
            "text": self.text,
            "tokens": [t.as_dict() for t in self.tokens],
            "setting": self.setting.as_dict(),
            "reference": self.reference.as_dict(),
            "tolerance": self.tolerance,
            "first_exceeding": first.name if first is not None else None,
            "modules": [m.as_dict() for m in self.modules],
        }


def check_tolerance(tolerance: float) -> float:
    """Refuse a tolerance that is negative, NaN or infinite."""
    if not math.isfinite(tolerance) or tolerance < 0:
        raise UsageError(f"--tolerance must be a finite number of at least 0, not {tolerance}")
    return tolerance


def compare_tensors(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[cosine, rel_error, max_abs_diff] of ``a`` against the reference ``b``, on a's device.

    Read in float32; NaN marks undefined (see the module docstring). Never
    synchronises with the host.
    """
    x = a.detach().reshape(-1).to(torch.float32)
    y = b.detach().reshape(-1).to(device=x.device, dtype=torch.float32)
    if x.numel() == 0:
        return torch.tensor([1.0, 0.0, 0.0], device=x.device)
    diff = x - y
    dist = torch.linalg.vector_norm(diff)
    norm_x = torch.linalg.vector_norm(x)
    norm_y = torch.linalg.vector_norm(y)
    max_abs = diff.abs().amax()
    equal = dist == 0
    nan = torch.tensor(float("nan"), device=x.device)
    denom = norm_x * norm_y
    cosine = torch.where(denom > 0, (x @ y) / denom, nan).clamp(-1.0, 1.0)
    cosine = torch.where(equal, 1.0, cosine)
    rel = torch.where(norm_y > 0, dist / norm_y, nan)
    rel = torch.where(equal, 0.0, rel)
    finite = torch.isfinite(x).all() & torch.isfinite(y).all()
    values = torch.stack([cosine, rel, max_abs])
    return torch.where(finite, values, nan)


def compare_settings(
    load: Loader,
    text: str,
    *,
    setting: Setting,
    reference: Setting,
    layers: str | Sequence[int] | None = None,
    filters: Sequence[str] = (),
    tolerance: float = 0.05,
) -> CompareResult:
    """Run ``text`` under ``reference`` then ``setting`` and compare every selected module call.

    ``layers`` and ``filters`` select modules as ``optinspect trace`` does.
    At most one of the two models is alive at any time (see the module docstring).
    """
    check_tolerance(tolerance)
    loaded = load(reference.quant, reference.dtype)
    tokens = encode(loaded, text)
    names = resolve_modules(loaded.model, loaded.num_layers, layers, filters)
    resolved_reference = Setting(loaded.quant, loaded.dtype_name)
    stored: dict[tuple[str, int], torch.Tensor] = {}

    def keep(_index: int, name: str, call: int, tensor: torch.Tensor) -> None:
        stored[(name, call)] = tensor.detach().to("cpu", copy=True)

    reference_records = _run(loaded, tokens, names, keep)
    wanted_dtype = resolve_dtype(setting.dtype, setting.quant, loaded.device)
    if setting.quant != loaded.quant or wanted_dtype != loaded.dtype:
        on_cuda = loaded.device.startswith("cuda")
        del loaded
        gc.collect()
        if on_cuda:
            torch.cuda.empty_cache()
        loaded = load(setting.quant, setting.dtype)
    metrics: dict[tuple[str, int], torch.Tensor] = {}
    mismatched: set[tuple[str, int]] = set()

    def measure(_index: int, name: str, call: int, tensor: torch.Tensor) -> None:
        expected = stored.pop((name, call), None)
        if expected is None:
            return
        if tuple(expected.shape) != tuple(tensor.shape):
            mismatched.add((name, call))
            return
        metrics[(name, call)] = compare_tensors(tensor, expected)

    records = _run(loaded, tokens, names, measure)
    stored.clear()
    rows = _diff_rows(records, reference_records, metrics, mismatched, tolerance)
    return CompareResult(
        model=loaded.name,
        device=loaded.device,
        random_weights=loaded.random_weights,
        text=text,
        tokens=tuple(tokens),
        setting=Setting(loaded.quant, loaded.dtype_name),
        reference=resolved_reference,
        tolerance=tolerance,
        modules=tuple(rows),
    )


def _run(
    loaded: LoadedModel,
    tokens: Sequence[Token],
    names: Sequence[str],
    sink: Callable[[int, str, int, torch.Tensor], None],
) -> list[ModuleRecord]:
    """One forward pass over ``tokens``; the sink sees every selected module's full output."""
    model = loaded.model
    input_ids = torch.tensor([[t.id for t in tokens]], dtype=torch.long)
    device = model.get_input_embeddings().weight.device
    with capture(model, names, stats=False, sink=sink) as cap:
        cap.begin(None)
        with torch.inference_mode():
            model(input_ids=input_ids.to(device), use_cache=False)
        return cap.collect()[0]


def _diff_rows(
    records: Sequence[ModuleRecord],
    reference_records: Sequence[ModuleRecord],
    metrics: dict[tuple[str, int], torch.Tensor],
    mismatched: set[tuple[str, int]],
    tolerance: float,
) -> list[ModuleDiff]:
    """Rows in the compared run's execution order; metrics come to the host in one transfer."""
    keys = list(metrics)
    host = torch.stack([metrics[k].cpu() for k in keys]).tolist() if keys else []
    values = dict(zip(keys, host, strict=True))
    reference_types = {(r.name, r.call): r.type for r in reference_records}
    reference_outputs = {(r.name, r.call): r.output for r in reference_records}
    rows: list[ModuleDiff] = []
    for r in records:
        key = (r.name, r.call)
        cosine = rel = max_abs = None
        if key in values:
            status = COMPARED
            cosine, rel, max_abs = (v if math.isfinite(v) else None for v in values[key])
        elif r.output != "tensor" or reference_outputs.get(key, "tensor") != "tensor":
            status = "no tensor"
        elif key not in reference_types:
            status = "not in reference"
        elif key in mismatched:
            status = "shape mismatch"
        else:
            status = "no tensor"
        if status == COMPARED:
            exceeds = rel is None or rel > tolerance
        else:
            exceeds = status in ("not in reference", "shape mismatch")
        rows.append(
            ModuleDiff(
                index=r.index,
                name=r.name,
                type=r.type,
                reference_type=reference_types.get(key),
                layer=r.layer,
                call=r.call,
                depth=r.depth,
                finished=r.finished,
                shape=r.shape,
                status=status,
                cosine=cosine,
                rel_error=rel,
                max_abs_diff=max_abs,
                exceeds=exceeds,
            )
        )
    return rows
