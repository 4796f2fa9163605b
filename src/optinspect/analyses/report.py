"""The report: every analysis of one sentence from one forward pass, with the parameters.

    loaded = load_model("tiny", quant="none", device="cpu", attn_implementation="eager")
    result = build_report(loaded, "The quick brown fox", layers="all", top_k=5)
    result.histograms["model.decoder.layers.0.fc1"].counts     # 64 bins, counted on the device

Trace (with per-module histograms), its FFN sparsity, outliers, the logit lens and
one layer's attention are collectors (``engine.collect``): their hook groups go on
the model together and one forward feeds every reducer. Attention weights need eager
attention, so the model is loaded with it. The parameter count needs no pass. With
``compare``, the reference setting runs first (``analyses.compare.run_reference``) and
its comparison rides on the same one forward of the compared model. The series across
depth are read from the trace's records: no extra hook.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..engine.collect import Collector, collect
from ..engine.histogram import DEFAULT_BINS
from ..engine.notes import notes_to
from ..engine.preflight import resolve_single_layer
from ..engine.runner import Runner
from ..engine.selection import LayerSpec, resolve_layers
from ..errors import UsageError
from ..model.families import adapter_for_config
from ..model.family import config_module_names
from ..model.loading import LoadedModel
from ..model.names import layer_of, role_of
from ..results.compare import DEFAULT_TOLERANCE, Setting
from ..results.outliers import DEFAULT_THRESHOLD
from ..results.params import ParamsResult
from ..results.report import (
    DEFAULT_ROLE,
    DEFAULT_TOP_K,
    SERIES_STATS,
    DepthSeries,
    ReportResult,
    histogram_key,
)
from ..results.trace import TraceResult
from .attention import AttentionCollector, HeadMapsCollector
from .compare import CompareCollector, run_reference
from .job import plan_of
from .lens import LensCollector
from .outliers import OutliersCollector
from .params import count_params, inventory_params
from .sparsity import FfnSparsity, has_relu_ffn, no_relu_note
from .trace import TraceCollector

if TYPE_CHECKING:
    from ..engine.preflight import Plan
    from .job import Context

__all__ = [
    "DEFAULT_TOP_K",
    "ReportCollectors",
    "ReportResult",
    "build_report",
    "check_role",
    "compute",
    "depth_series",
]

#: What ``the text is empty`` asks for.
VERB = "report on"


@dataclass
class ReportCollectors:
    """The collectors of one report's forward pass (``comparer`` only with compare)."""

    trace: TraceCollector
    sparsity: FfnSparsity | None  # None without a ReLU FFN, as in trace
    outliers: OutliersCollector
    lens: LensCollector
    attention: AttentionCollector
    heads: HeadMapsCollector
    comparer: CompareCollector | None = None

    @classmethod
    def of(
        cls,
        loaded: LoadedModel,
        *,
        layers: LayerSpec = "all",
        filters: Sequence[str] = (),
        attention_layer: str | int = -1,
        head: int | None = None,
        top_k: int = DEFAULT_TOP_K,
        bins: int = DEFAULT_BINS,
        comparer: CompareCollector | None = None,
    ) -> ReportCollectors:
        """Each analysis as its own command runs it by default, but for the options given:
        ``layers`` and ``filters`` select trace's modules and sparsity's layers, as
        ``trace --layer`` does; the lens reads every layer."""
        return cls(
            trace=TraceCollector(loaded, layers=layers, filters=filters, bins=bins),
            sparsity=FfnSparsity(loaded.model, resolve_layers(layers, loaded.num_layers))
            if has_relu_ffn(loaded.model)
            else None,
            outliers=OutliersCollector(loaded, threshold=DEFAULT_THRESHOLD),
            lens=LensCollector(loaded, top_k=top_k),
            attention=AttentionCollector(loaded, layer=attention_layer, head=head),
            heads=HeadMapsCollector(loaded),
            comparer=comparer,
        )

    def all(self) -> list[Collector]:
        """Every collector, in the order their hook groups go on the model."""
        chosen: list[Collector] = [self.trace, self.outliers, self.lens]
        if self.sparsity is not None:
            chosen.insert(1, self.sparsity)
        if self.comparer is not None:
            chosen.append(self.comparer)
        return [*chosen, self.attention, self.heads]


def build_report(
    loaded: LoadedModel,
    text: str,
    *,
    model: str | None = None,
    layers: LayerSpec = "all",
    filters: Sequence[str] = (),
    attention_layer: str | int = -1,
    head: int | None = None,
    top_k: int = DEFAULT_TOP_K,
    role: str = DEFAULT_ROLE,
    truncate: bool = False,
    bins: int = DEFAULT_BINS,
    comparer: CompareCollector | None = None,
) -> ReportResult:
    """Run ``text`` once with every analysis's hooks on and return the report.

    ``loaded`` must use eager attention (``attn_implementation="eager"``), the only kind
    that returns weights. ``model`` is the spec the parameters are counted from (the
    loaded model's name when None); ``comparer`` adds compare's result.
    """
    parts = ReportCollectors.of(
        loaded,
        layers=layers,
        filters=filters,
        attention_layer=attention_layer,
        head=head,
        top_k=top_k,
        bins=bins,
        comparer=comparer,
    )
    runner = Runner(loaded, batch_size=1, truncate=truncate, verb=VERB)
    collectors = parts.all()
    with contextlib.closing(collect(runner, [text], collectors)) as batches:
        _batch, outputs = next(batches)
        histograms = parts.trace.capture.histograms()  # before the hooks go
    # Each per-sentence collector's results, by collector: one sentence, so the first.
    first = {id(c): out[0] for c, out in zip(collectors, outputs, strict=True) if out}
    trace = first[id(parts.trace)]
    return ReportResult(
        info=loaded.info,
        trace=trace,
        sparsity=None if parts.sparsity is None else tuple(parts.sparsity.summary()),
        params=ParamsResult(count_params(inventory_params(model or loaded.name), by="group")),
        outliers=parts.outliers.result(),
        attention=first[id(parts.attention)],
        heads=first[id(parts.heads)],
        lens=first[id(parts.lens)],
        histograms={histogram_key(*key): h for key, h in histograms.items()},
        layer_series=depth_series(trace),
        role_series=depth_series(trace, role),
        compare=first[id(comparer)] if comparer is not None else None,
    )


def depth_series(trace: TraceResult, role: str | None = None) -> DepthSeries:
    """Mean, std and absmax of ``role``'s output in each decoder layer (None: the
    layer's own output), read from ``trace``'s records (first call of each), by layer."""
    points: dict[int, tuple[float | None, ...]] = {}
    for record in trace.modules:
        layer = layer_of(record.name)
        if layer is None or record.call != 0 or record.stats is None or layer in points:
            continue
        if role_of(record.name) == role:  # None: the layer's own output, its root
            points[layer] = tuple(getattr(record.stats, s) for s in SERIES_STATS)
    layers = tuple(sorted(points))
    columns = [tuple(points[i][s] for i in layers) for s in range(len(SERIES_STATS))]
    return DepthSeries(role, layers, *columns)


def check_role(role: str, config: dict[str, object]) -> str:
    """``role`` when a module of that name sits in every decoder layer, else a usage error
    naming the choices; from the config alone. The default, ``fc1``, stands for the
    family's FFN input linear (``mlp.gate_proj`` in the Llama layout, ``mlp.c_fc`` in
    GPT-2)."""
    if role == DEFAULT_ROLE:
        role = adapter_for_config(config).ffn_in
    roles = {r for name in config_module_names(config) if (r := role_of(name)) is not None}
    if role not in roles:
        choices = ", ".join(sorted(roles))
        raise UsageError(f"--role {role} is no module of a decoder layer: choose from {choices}")
    return role


def compute(
    ctx: Context,
    plan: Plan | None,
    texts: None,
    *,
    text: str,
    model: str,
    layers: str | None,
    filters: tuple[str, ...],
    attention_layer: str,
    head: int | None,
    top_k: int,
    role: str,
    truncate: bool,
    setting: list[str],
    compare: list[str] | None,
) -> Iterator[ReportResult]:
    """The report job, where the model is: eager attention; with ``compare`` (a
    [quant, dtype] reference setting), the reference's pass first."""
    plan = plan_of(plan)
    role = check_role(role, plan.config)
    attention_layer = str(resolve_single_layer(attention_layer, plan.num_layers))
    comparer = None
    if compare is None:
        loaded = ctx.model(attn_implementation="eager")
    else:

        def load_setting(quant_name: str, dtype_name: str) -> LoadedModel:
            return ctx.model(quant=quant_name, dtype=dtype_name, attn_implementation="eager")

        loaded, reference, names = run_reference(
            load_setting,
            [text],
            setting=Setting(*setting),
            reference=Setting(*compare),
            layers=layers,
            filters=filters,
            truncate=truncate,
            check=ctx.check_cancelled,
        )
        comparer = CompareCollector(loaded, reference, names, tolerance=DEFAULT_TOLERANCE)
    if not has_relu_ffn(loaded.model):
        ctx.note(no_relu_note(loaded.model, loaded.name))
    # The same text, cut the same way: after a reference pass, its notes said it.
    with notes_to(None) if comparer is not None else contextlib.nullcontext():
        report = build_report(
            loaded,
            text,
            model=model,
            layers=layers,
            filters=filters,
            attention_layer=attention_layer,
            head=head,
            top_k=top_k,
            role=role,
            truncate=truncate,
            comparer=comparer,
        )
    yield report
