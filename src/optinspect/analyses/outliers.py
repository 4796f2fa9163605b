"""LLM.int8 outlier features: input dimensions of the linear layers that reach the threshold.

    loaded = load_model("tiny", quant="8bit", device="cpu")
    result = find_outliers(loaded, ["The quick brown fox", "Hello"])
    result.recurring                  # dimensions that recur across layers

Every linear layer inside the decoder layers (OPT's ``q_proj``, ``k_proj``,
``v_proj``, ``out_proj``, ``fc1``, ``fc2``; the family adapter's ``linear_roles``)
gets a forward pre-hook that
reads its input x, one row per token position. Padding positions are left
out; ``</s>`` at position 0 counts like any other token. A module's
threshold is its own LLM.int8 threshold when it has one (bitsandbytes
``Linear8bitLt.state.threshold``, 6.0 when transformers loads in 8-bit),
else ``--threshold``. Dimension d of a module's input *reaches* the
threshold at a token when |x[token, d]| >= threshold, the comparison
bitsandbytes makes when it splits outliers off.

Per module, on the input's device and without keeping any activation: how
many tokens each dimension reached the threshold at, each dimension's
largest |x|, and how many tokens had at least one dimension reach it. They
come to the host once, after the last batch.

The recurring dimensions follow the LLM.int8 paper (Dettmers et al. 2022,
section 4.1). They are counted over the inputs of q_proj, k_proj, v_proj,
out_proj and fc1 (for OPT; the adapter's ``summary_roles`` for the other families:
the Llama layout's q/k/v, gate_proj and up_proj, GPT-2's c_attn, attn.c_proj and
c_fc), which live in the model's hidden dimension; fc2's input
(the feed-forward contraction layer, ffn_dim features) is reported per
module but, as in the paper, left out. Dimension d recurs when both:

- layers: d reaches the threshold, at one token or more, in one of those
  modules of at least 25% of the model's decoder layers;
- tokens: the (module input, token position) pairs at which d reaches the
  threshold are at least 6% of all such pairs, over those modules in every
  decoder layer and every token of every sentence.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from ..engine.batch import Batch
from ..engine.collect import NO_KWARGS, collect
from ..engine.hooks import HookGroup
from ..engine.preflight import check_threshold
from ..engine.runner import Progress, Runner
from ..errors import UsageError
from ..model.families import ADAPTERS
from ..model.loading import LoadedModel
from ..model.names import adapter_of, in_features, layer_of, role_of
from ..results.outliers import (
    DEFAULT_THRESHOLD,
    MIN_LAYER_FRACTION,
    MIN_TOKEN_FRACTION,
    DimCount,
    ModuleOutliers,
    OutlierResult,
    RecurringDim,
)
from ..results.records import finite_or_none

if TYPE_CHECKING:
    from ..engine.preflight import Plan
    from .job import Context

__all__ = [
    "DEFAULT_THRESHOLD",
    "MIN_LAYER_FRACTION",
    "MIN_TOKEN_FRACTION",
    "DimCount",
    "ModuleOutliers",
    "OutlierCounter",
    "OutlierResult",
    "OutliersCollector",
    "RecurringDim",
    "compute",
    "find_outliers",
    "linear_inputs",
    "module_threshold",
    "summarize_recurring",
]

#: What ``the text is empty`` asks for.
VERB = "inspect"
#: Module roles (names inside a decoder layer) whose inputs count toward the summary:
#: those in the hidden dimension, of every family (a role means the same in each family
#: that has it: OPT's q/k/v/out_proj and fc1, the Llama layout's q/k/v, gate and up
#: projections, GPT-2's c_attn, attn.c_proj and c_fc).
SUMMARY_ROLES = tuple(dict.fromkeys(role for a in ADAPTERS for role in a.summary_roles))


def module_threshold(module: nn.Module, default: float) -> tuple[float, str]:
    """The module's own LLM.int8 threshold when it has one above 0, else ``default``."""
    threshold = getattr(getattr(module, "state", None), "threshold", None)
    if isinstance(threshold, (int, float)) and threshold > 0:
        return float(threshold), "module"
    return default, "option"


@dataclass
class _Tally:
    """Running counts of one module; ``counts`` lives on its input's device."""

    name: str
    module: nn.Module
    threshold: float
    source: str
    tokens: int = 0
    order: int = -1  # position among the modules in the order they first ran
    #: (hits per dimension [F] int64, max |x| per dimension [F] float32, tokens with
    #: any hit [] int64); None until the module first runs.
    counts: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None


class OutlierCounter(HookGroup):
    """Counts, per module, where its input reaches the threshold, in one ``with`` block.

    Pre-hooks exist only inside the block and are removed on every path; the
    runner calls ``begin(batch)`` before each forward pass.
    """

    def __init__(self, model: nn.Module, names: Sequence[str], default: float) -> None:
        super().__init__()
        modules = dict(model.named_modules())
        self._tallies = [
            _Tally(name, modules[name], *module_threshold(modules[name], default)) for name in names
        ]
        self._valid: torch.Tensor | None = None
        self._valid_on: dict[torch.device, torch.Tensor] = {}
        self._real_tokens = 0
        self._started = 0

    def _register(self) -> None:
        for tally in self._tallies:
            self._keep(tally.module.register_forward_pre_hook(self._make_hook(tally)))

    def begin(self, batch: Batch) -> None:
        """Start a forward pass; only the batch's real (unpadded) tokens count."""
        valid = batch.layout.valid
        self._valid = valid.reshape(-1) if valid is not None else None
        self._valid_on: dict[torch.device, torch.Tensor] = {}
        self._real_tokens = batch.real_tokens

    def _make_hook(self, tally: _Tally) -> Callable[..., None]:
        def pre_hook(module: nn.Module, args: Any) -> None:
            if not args or not isinstance(args[0], torch.Tensor):
                return
            if tally.order < 0:
                tally.order = self._started
                self._started += 1
            x = args[0].detach()
            magnitude = x.reshape(-1, x.shape[-1]).abs()
            valid = self._valid
            if valid is not None and valid.numel() == magnitude.shape[0]:
                # Padding rows become 0: below any threshold and any real maximum.
                on = self._valid_on.get(magnitude.device)
                if on is None:  # one copy per device and batch, not one per module
                    on = self._valid_on[magnitude.device] = valid.to(magnitude.device)
                magnitude = magnitude.masked_fill(~on[:, None], 0)
                tally.tokens += self._real_tokens
            else:
                tally.tokens += magnitude.shape[0]
            hit = magnitude >= tally.threshold  # NaN never reaches it
            hits, rows = hit.sum(dim=0), hit.any(dim=1).sum()
            peak = magnitude.amax(dim=0).to(torch.float32)
            if tally.counts is not None:
                old_hits, old_peak, old_rows = tally.counts
                # fmax: a NaN never replaces a number.
                hits, peak, rows = old_hits + hits, torch.fmax(old_peak, peak), old_rows + rows
            tally.counts = (hits, peak, rows)

        return pre_hook

    def collect(self) -> list[ModuleOutliers]:
        """Every module's counts, brought to the host in one transfer.

        Modules come in the order they first ran (q_proj before k_proj), then
        any that never ran.
        """
        ran = sorted((t for t in self._tallies if t.counts is not None), key=lambda t: t.order)
        vectors = [
            torch.cat([hits.double(), peak.double(), rows.double().reshape(1)])
            for hits, peak, rows in (t.counts for t in ran if t.counts is not None)
        ]
        flat: list[float] = []
        if vectors:
            # Gather on one device first (device-to-device copies): the host waits once.
            flat = torch.cat([v.to(vectors[0].device) for v in vectors]).cpu().tolist()
        rows: list[ModuleOutliers] = []
        offset = 0
        for tally, vector in zip(ran, vectors, strict=True):
            n = (vector.numel() - 1) // 2
            part = flat[offset : offset + vector.numel()]
            rows.append(_module_row(tally, [int(v) for v in part[:n]], part[n:-1], int(part[-1])))
            offset += vector.numel()
        idle = [t for t in self._tallies if t.counts is None]
        return rows + [_module_row(t, [], [], 0) for t in idle]


def linear_inputs(model: nn.Module) -> list[str]:
    """Names of the linear layers inside the decoder layers (the family's linear roles),
    in module order."""
    roles = set(adapter_of(model).linear_roles)
    return [name for name, _ in model.named_modules() if role_of(name) in roles]


def find_outliers(
    loaded: LoadedModel,
    texts: Iterable[str],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    batch_size: int = 8,
    truncate: bool = False,
    advance: Progress | None = None,
) -> OutlierResult:
    """Run ``texts`` in right-padded batches and count outlier features per linear layer.

    ``advance`` hears of every finished batch.
    """
    outliers = OutliersCollector(loaded, threshold=threshold)
    runner = Runner(loaded, batch_size=batch_size, truncate=truncate, verb=VERB, advance=advance)
    for _batch in collect(runner, texts, [outliers]):
        pass
    return outliers.result()


class OutliersCollector:
    """The outlier count's hook group and reducer: it counts as batches run, and its one
    result, ``result()``, covers every sentence run."""

    forward_kwargs: ClassVar[Mapping[str, Any]] = NO_KWARGS

    def __init__(self, loaded: LoadedModel, *, threshold: float = DEFAULT_THRESHOLD) -> None:
        self.loaded = loaded
        self.threshold = check_threshold(threshold)
        model = loaded.model
        self.counter = OutlierCounter(model, linear_inputs(model), threshold)
        self.sentences = 0
        self.tokens = 0

    def groups(self) -> list[OutlierCounter]:
        return [self.counter]

    def finish(self, batch: Batch, output: Any) -> None:
        """Count the batch's sentences and real tokens; the counts stay on the device."""
        self.sentences += batch.size
        self.tokens += batch.real_tokens

    def result(self) -> OutlierResult:
        """Every module's counts and the recurring dimensions, in one transfer."""
        if self.sentences == 0:
            raise UsageError("the input holds no sentences: give at least one line of text")
        modules = tuple(self.counter.collect())
        num_layers = self.loaded.num_layers
        return OutlierResult(
            info=self.loaded.info,
            threshold=self.threshold,
            num_layers=num_layers,
            sentences=self.sentences,
            tokens=self.tokens,
            modules=modules,
            recurring=tuple(summarize_recurring(modules, num_layers)),
        )


def summarize_recurring(modules: Sequence[ModuleOutliers], num_layers: int) -> list[RecurringDim]:
    """The dimensions that meet both criteria of the module docstring, by index."""
    counted = [m for m in modules if m.summary]
    pairs = sum(m.tokens for m in counted)
    layers: dict[int, set[int]] = {}
    hits: dict[int, int] = {}
    peaks: dict[int, list[float]] = {}
    for m in counted:
        for d in m.dims:
            layers.setdefault(d.dim, set()).add(m.layer)
            hits[d.dim] = hits.get(d.dim, 0) + d.count
            peaks.setdefault(d.dim, []).extend([d.absmax] if d.absmax is not None else [])
    recurring: list[RecurringDim] = []
    for dim in sorted(layers):
        layer_fraction = len(layers[dim]) / num_layers
        token_fraction = hits[dim] / pairs if pairs else 0.0
        if layer_fraction >= MIN_LAYER_FRACTION and token_fraction >= MIN_TOKEN_FRACTION:
            recurring.append(
                RecurringDim(
                    dim=dim,
                    layers=tuple(sorted(layers[dim])),
                    layer_fraction=layer_fraction,
                    token_fraction=token_fraction,
                    absmax=max(peaks[dim], default=None),
                )
            )
    return recurring


def _module_row(tally: _Tally, hits: list[int], peaks: list[float], rows: int) -> ModuleOutliers:
    tokens = tally.tokens
    dims = tuple(
        DimCount(
            dim=d, count=n, fraction=n / tokens if tokens else 0.0, absmax=finite_or_none(peaks[d])
        )
        for d, n in enumerate(hits)
        if n > 0
    )
    numbers = [p for p in peaks if not math.isnan(p)]
    return ModuleOutliers(
        name=tally.name,
        type=type(tally.module).__name__,
        layer=layer_of(tally.name) or 0,
        in_features=in_features(tally.module) or len(hits),
        threshold=tally.threshold,
        threshold_source=tally.source,
        summary=role_of(tally.name) in SUMMARY_ROLES,
        tokens=tokens,
        tokens_affected=rows,
        absmax=finite_or_none(max(numbers)) if numbers else None,
        dims=dims,
    )


def compute(
    ctx: Context,
    plan: Plan | None,
    texts: Iterable[str] | None,
    *,
    threshold: float,
    batch_size: int,
    truncate: bool,
) -> Iterator[OutlierResult]:
    """The outliers job, where the model is: one result for the whole input."""
    if texts is None:  # outliers summarise a corpus: an empty one has no answer
        raise UsageError("the input holds no sentences: give at least one line of text")
    yield find_outliers(
        ctx.model(),
        texts,
        threshold=threshold,
        batch_size=batch_size,
        truncate=truncate,
        advance=ctx.advance,
    )
