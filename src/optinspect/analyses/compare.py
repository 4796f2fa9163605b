"""Comparing one model under two settings (quantization, dtype), module by module.

    load = lambda quant, dtype: load_model("tiny", quant=quant, dtype=dtype, device="cpu")
    result = compare_settings(load, "The quick brown fox", setting=Setting("8bit", "auto"),
                              reference=Setting("none", "auto"), layers="0")
    result.first_exceeding            # the first module whose error passes the tolerance
    results = compare_many(load, sentences, setting=..., reference=..., batch_size=8)

``load(quant, dtype)`` returns a ``LoadedModel``; the comparison owns the
models' lifetimes so that two full models never sit on one device together:

1. the reference setting is loaded and runs every sentence once; the full
   output of every selected module call is copied to the CPU as it is
   produced (in its own dtype) and nothing else is kept;
2. the reference model is dropped (``del``, ``gc.collect()``,
   ``torch.cuda.empty_cache()`` on CUDA) before the other setting loads;
3. the other setting runs the same batches of token ids; as each selected module call
   finishes, its output is compared with the stored reference output on the
   device, and that reference tensor is dropped at once. Only three numbers
   per module call survive the pass; they reach the host in one transfer.

Peak memory is one model on the device plus the selected reference outputs of
every sentence on the host. When both settings are the same, the model is loaded once and run
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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from ..engine.batch import Batch
from ..engine.capture import Capture, capture
from ..engine.collect import NO_KWARGS, collect
from ..engine.notes import notes_to
from ..engine.preflight import check_tolerance
from ..engine.runner import Progress, Runner
from ..engine.selection import LayerSpec, select_names
from ..model.loading import LoadedModel, resolve_dtype
from ..model.names import module_names
from ..results.compare import DEFAULT_TOLERANCE, CompareResult, ModuleDiff, Setting
from ..results.records import ModuleRecord, finite_or_none

if TYPE_CHECKING:
    from ..engine.preflight import Plan
    from .job import Context

__all__ = [
    "CompareCollector",
    "CompareResult",
    "ModuleDiff",
    "Setting",
    "compare_many",
    "compare_settings",
    "compare_tensors",
    "compute",
    "run_reference",
]

#: What ``the text is empty`` asks for.
VERB = "compare"

#: Loads the model under (quant, dtype); the comparison decides when.
Loader = Callable[[str, str], LoadedModel]

#: Row status: both settings produced a tensor of the same shape and it was compared.
COMPARED = "compared"


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
    layers: LayerSpec = None,
    filters: Sequence[str] = (),
    tolerance: float = DEFAULT_TOLERANCE,
    truncate: bool = False,
) -> CompareResult:
    """Run ``text`` under ``reference`` then ``setting`` and compare every selected module call.

    ``layers`` and ``filters`` select modules as ``optinspect trace`` does.
    At most one of the two models is alive at any time (see the module docstring).
    """
    options = {"layers": layers, "filters": filters, "tolerance": tolerance, "truncate": truncate}
    (result,) = compare_many(load, [text], setting=setting, reference=reference, **options)
    return result


#: A selected module call of one sentence: (sentence index, module name, call).
_Key = tuple[int, str, int]


def compare_many(
    load: Loader,
    texts: Iterable[str],
    *,
    setting: Setting,
    reference: Setting,
    layers: LayerSpec = None,
    filters: Sequence[str] = (),
    tolerance: float = DEFAULT_TOLERANCE,
    batch_size: int = 8,
    truncate: bool = False,
    advance: Progress | None = None,
    check: Callable[[], None] | None = None,
) -> list[CompareResult]:
    """``compare_settings`` for many sentences, in batches; one result per sentence.

    Both settings run the same batches, so padding is the same on both sides.
    ``advance`` hears of the compared setting's batches; ``check`` is called after each
    batch of the reference setting, and may raise to stop the comparison there.
    """
    check_tolerance(tolerance)
    sentences = list(texts)
    loaded, stored, names = run_reference(
        load,
        sentences,
        setting=setting,
        reference=reference,
        layers=layers,
        filters=filters,
        batch_size=batch_size,
        truncate=truncate,
        check=check,
    )
    runner = Runner(loaded, batch_size=batch_size, truncate=truncate, verb=VERB, advance=advance)
    comparer = CompareCollector(loaded, stored, names, tolerance=tolerance)
    results: list[CompareResult] = []
    with notes_to(None):  # the same texts, cut the same way: the reference's notes said it
        for _batch, (rows,) in collect(runner, sentences, [comparer]):
            results.extend(rows)
    return results


@dataclass
class Reference:
    """What the reference setting's pass leaves: every selected module call's output on
    the CPU (each dropped as the other setting compares it) and each sentence's records."""

    setting: Setting
    outputs: dict[_Key, torch.Tensor]
    records: dict[int, list[ModuleRecord]]


def run_reference(
    load: Loader,
    sentences: Sequence[str],
    *,
    setting: Setting,
    reference: Setting,
    layers: LayerSpec = None,
    filters: Sequence[str] = (),
    batch_size: int = 8,
    truncate: bool = False,
    check: Callable[[], None] | None = None,
) -> tuple[LoadedModel, Reference, list[str]]:
    """Steps 1 and 2 of the module docstring: the reference setting runs every sentence,
    its selected outputs kept on the CPU; it is dropped, and ``setting`` loaded (the
    same model when the settings agree). Returns that model, what the reference left,
    and the selected module names. ``check`` runs after each reference batch."""
    loaded = load(reference.quant, reference.dtype)
    names = select_names(module_names(loaded.model), loaded.num_layers, layers, filters)
    checked = (lambda _sentences: check()) if check is not None else None
    runner = Runner(loaded, batch_size=batch_size, truncate=truncate, verb=VERB, advance=checked)
    stored: dict[_Key, torch.Tensor] = {}

    def keep(index: int, name: str, call: int, tensor: torch.Tensor) -> None:
        stored[(index, name, call)] = tensor.detach().to("cpu", copy=True)

    records: dict[int, list[ModuleRecord]] = {}
    with capture(loaded.model, names, stats=False, sink=keep) as cap:
        for batch, output in runner.run(sentences, [cap]):
            del output
            for b, sentence in enumerate(cap.collect()):
                records[batch.first + b] = sentence
    kept = Reference(Setting(loaded.quant, loaded.dtype_name), stored, records)
    wanted_dtype = resolve_dtype(setting.dtype, setting.quant, loaded.device)
    if setting.quant != loaded.quant or wanted_dtype != loaded.dtype:
        on_cuda = loaded.device.startswith("cuda")
        del loaded, runner, cap
        gc.collect()
        if on_cuda:
            torch.cuda.empty_cache()
        loaded = load(setting.quant, setting.dtype)
    return loaded, kept, names


class CompareCollector:
    """The compared setting's hook group (each selected output measured against the
    reference's, which is then dropped) and reducer: one ``CompareResult`` per sentence."""

    forward_kwargs: ClassVar[Mapping[str, Any]] = NO_KWARGS

    def __init__(
        self,
        loaded: LoadedModel,
        reference: Reference,
        names: Sequence[str],
        *,
        tolerance: float = DEFAULT_TOLERANCE,
    ) -> None:
        self.info = loaded.info
        self.setting = Setting(loaded.quant, loaded.dtype_name)
        self.reference = reference
        self.tolerance = check_tolerance(tolerance)
        self.metrics: dict[_Key, torch.Tensor] = {}
        self.mismatched: set[_Key] = set()
        self.capture = capture(loaded.model, names, stats=False, sink=self._measure)

    def _measure(self, index: int, name: str, call: int, tensor: torch.Tensor) -> None:
        expected = self.reference.outputs.pop((index, name, call), None)
        if expected is None:
            return
        if tuple(expected.shape) != tuple(tensor.shape):
            self.mismatched.add((index, name, call))
            return
        self.metrics[(index, name, call)] = compare_tensors(tensor, expected)

    def groups(self) -> list[Capture]:
        return [self.capture]

    def finish(self, batch: Batch, output: Any) -> list[CompareResult]:
        """The batch's sentences, each module call's metrics in one transfer."""
        results: list[CompareResult] = []
        for b, records in enumerate(self.capture.collect()):
            index = batch.first + b
            metrics = {k[1:]: self.metrics.pop(k) for k in list(self.metrics) if k[0] == index}
            mismatched = {k[1:] for k in self.mismatched if k[0] == index}
            rows = _diff_rows(
                records,
                self.reference.records.pop(index, []),
                metrics,
                mismatched,
                self.tolerance,
            )
            results.append(
                CompareResult(
                    info=self.info,
                    text=batch.texts[b],
                    tokens=batch.tokens[b],
                    setting=self.setting,
                    reference=self.reference.setting,
                    tolerance=self.tolerance,
                    modules=tuple(rows),
                    index=index,
                )
            )
        self.mismatched = {k for k in self.mismatched if k[0] >= batch.first + batch.size}
        return results


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
            cosine, rel, max_abs = (finite_or_none(v) for v in values[key])
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


def compute(
    ctx: Context,
    plan: Plan | None,
    texts: Iterable[str] | None,
    *,
    setting: list[str],
    reference: list[str],
    layers: str | None,
    filters: tuple[str, ...],
    tolerance: float,
    batch_size: int,
    truncate: bool,
) -> Iterator[CompareResult]:
    """The compare job, where the model is: the reference setting first (loaded for the
    job), then the asked one; one result per sentence."""
    if texts is None:
        return

    def load_setting(quant_name: str, dtype_name: str) -> LoadedModel:
        return ctx.model(quant=quant_name, dtype=dtype_name)

    yield from compare_many(
        load_setting,
        texts,
        setting=Setting(*setting),
        reference=Setting(*reference),
        layers=layers,
        filters=filters,
        tolerance=tolerance,
        batch_size=batch_size,
        truncate=truncate,
        advance=ctx.advance,
        check=ctx.check_cancelled,
    )
