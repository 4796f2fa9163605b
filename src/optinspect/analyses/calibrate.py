"""Calibration statistics: per-input-channel statistics of every linear layer's input over a
corpus, the files quantization tools read, and a corpus-level summary of every module's output.

    loaded = load_model("tiny", quant="none", device="cpu")
    result = calibrate(loaded, [[2, 100, 200], [2, 300]], batch_size=8)
    torch.save(result.act_scales(), "act_scales.pt")     # SmoothQuant's file

Every ``nn.Linear`` (quantized ``Linear8bitLt`` and ``Linear4bit`` included,
and ``lm_head``) gets a forward pre-hook that reads its input x, one row per
token; padding rows are left out. Per input channel, on the input's device,
running over every batch: min, max (so max |x| = max(-min, max)), the sums of
|x|, x and x^2 (each batch summed in float32, the running sums in float64),
and the token count. Nothing else is kept, so memory does not grow with the
samples. ``q_proj``, ``k_proj`` and ``v_proj`` read one tensor: it is reduced
once and counted for each.

Histogram of |x| per linear input (all its channels together), on the device:
a float32 |x| falls in bin ``bits(|x|) >> 19``, its exponent and first 4
mantissa bits. The 4096 bins cover every float32 (zero and subnormals in the
first 16, Inf and NaN in the last 16) with 16 bins per power of two, so no
value is ever clipped; a bin spans [2^e (1 + j/16), 2^e (1 + (j+1)/16)). A
percentile (nearest rank) is read as the middle of the bin holding that rank,
capped at the exact max |x|: its relative error is at most 1/32 (3.125%) for
normal floats, and its absolute error under 2^-127 below them.

Every module's output gets the summary ``trace`` gives for one sentence
(mean, std, min, max, absmax, rms, zeros, nan, inf), over every real token
of every sample: the engine's exact partials (``engine.stats``) pooled batch
by batch, and rank by rank, with Chan's variance combination.

Under a launcher each rank runs the batches ``i % world == rank`` of the
batches one process would form, and the counters are merged with
``torch.distributed``: MIN and MAX for the extremes, SUM for sums, counts and
histograms; the output partials are gathered and pooled.

The job (``compute``; ``calibrate_ranks`` under a launcher) chooses the samples (a
seeded shuffle, ``--samples``), tokenizes and packs them (``--seq-len``, ``--pack``),
runs them, and writes the files (``--act-scales``, ``--act-shifts``, ``--out``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..engine.batch import Batch
from ..engine.capture import main_tensor
from ..engine.distributed import Ranks, agree, all_reduce, gather, process_group
from ..engine.hooks import HookGroup
from ..engine.notes import notes_to
from ..engine.preflight import check_output_paths, preflight
from ..engine.runner import Runner
from ..engine.samples import (
    check_sample_options,
    choose,
    pack_blocks,
    read_samples,
    shuffled,
    tokenize_samples,
)
from ..engine.saving import save_safetensors, save_torch
from ..engine.stats import (
    PARTIALS,
    OncePerTensor,
    TokenPartials,
    empty_partial,
    exact_partials,
    finalize_partials,
    finalize_stats,
    pool_partials,
)
from ..errors import OptinspectError, UsageError
from ..model.family import config_value
from ..model.loading import LoadedModel
from ..model.names import adapter_of, in_features, is_linear, layer_of, module_names
from ..results.calibration import (
    _SHIFT,
    CHANNEL_STATS,
    HIST_BINS,
    PERCENTILE_ERROR,
    SUB_BITS,
    CalibrationResult,
    CalibrationSettings,
    LinearInput,
    ModuleOutput,
)
from ..results.records import TensorStats, finite_or_none
from .job import plan_of

if TYPE_CHECKING:
    from ..engine.preflight import Plan
    from ..model.settings import LoadSettings
    from .job import Context

__all__ = [
    "CHANNEL_STATS",
    "HIST_BINS",
    "PERCENTILES",
    "PERCENTILE_ERROR",
    "SUB_BITS",
    "CalibrationResult",
    "CalibrationSettings",
    "ChannelStats",
    "LinearInput",
    "ModuleOutput",
    "OutputSummary",
    "calibrate",
    "calibrate_ranks",
    "calibrate_samples",
    "choose_samples",
    "compute",
    "linear_names",
    "percentile_from_histogram",
    "rank_device",
    "write_files",
]

#: The percentiles reported per linear input, by name.
PERCENTILES: dict[str, float] = {"p99": 0.99, "p99.9": 0.999, "p99.99": 0.9999}
_SIGN_OFF = 0x7FFFFFFF


def percentile_from_histogram(
    hist: torch.Tensor, q: float, elements: int, cap: float | None
) -> float | None:
    """The nearest-rank ``q`` quantile of |x| read from its histogram: the middle of the
    bin holding rank ceil(q * elements), capped at ``cap`` (the exact max |x|).

    None when there are no elements or the rank falls among Inf and NaN.
    """
    if elements <= 0:
        return None
    rank = max(1, math.ceil(q * elements))
    cumulative = hist.cumsum(0)
    index = int(torch.searchsorted(cumulative, torch.tensor(rank, dtype=cumulative.dtype)))
    edges = torch.tensor([index, index + 1], dtype=torch.int64).mul(1 << _SHIFT)
    low, high = edges.to(torch.int32).view(torch.float32).tolist()
    if not math.isfinite(low):
        return None
    middle = (low + high) / 2 if math.isfinite(high) else low
    return min(middle, cap) if cap is not None else middle


def linear_names(model: nn.Module) -> list[str]:
    """Every linear layer (``nn.Linear``, GPT-2's ``Conv1D``) in ``named_modules()`` order:
    the keys of act_scales (the names SmoothQuant's ``smooth_lm`` looks up)."""
    return [name for name, m in model.named_modules() if is_linear(m)]


@dataclass
class _Running:
    """One linear input's running counters, on its device once it has run."""

    name: str
    module: nn.Module
    in_features: int
    tokens: int = 0
    lo: torch.Tensor | None = None  # [F] float32
    hi: torch.Tensor | None = None  # [F] float32
    sums: torch.Tensor | None = None  # [3, F] float64: |x|, x, x^2
    hist: torch.Tensor | None = None  # [HIST_BINS] int64


def _reduce_rows(rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """One batch of one input, [N, F] real rows -> (min, max, sums [3, F], histogram)."""
    x = rows if rows.dtype == torch.float32 else rows.to(torch.float32)
    bits = torch.bitwise_and(x.view(torch.int32), _SIGN_OFF)  # |x| without a float pass
    magnitude = bits.view(torch.float32)
    sums = torch.stack([magnitude.sum(dim=0), x.sum(dim=0), (x * x).sum(dim=0)]).double()
    bins = torch.bitwise_right_shift(bits, _SHIFT).reshape(-1)
    hist = torch.bincount(bins, minlength=HIST_BINS)
    return x.amin(dim=0), x.amax(dim=0), sums, hist


class ChannelStats(HookGroup):
    """Per-channel statistics of every named linear layer's input, in one ``with`` block."""

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        modules = dict(model.named_modules())
        self._running = [_Running(n, modules[n], in_features(modules[n])) for n in names]
        self._rows: torch.Tensor | None = None  # indices of the real rows, or None
        self._rows_on: dict[torch.device, torch.Tensor] = {}
        self._real = 0
        self._last: tuple[weakref.ref[torch.Tensor], tuple[torch.Tensor, ...]] | None = None

    def _register(self) -> None:
        for running in self._running:
            self._keep(running.module.register_forward_pre_hook(self._make_hook(running)))

    def begin(self, batch: Batch) -> None:
        """A batch comes: only its real (unpadded) rows count."""
        valid = batch.layout.valid
        self._rows = valid.reshape(-1).nonzero().squeeze(1) if valid is not None else None
        self._rows_on = {}
        self._real = batch.real_tokens
        self._last = None

    def _make_hook(self, running: _Running) -> Callable[..., None]:
        def pre_hook(module: nn.Module, args: Any) -> None:
            if not args or not isinstance(args[0], torch.Tensor):
                return
            x = args[0]
            last = self._last
            if last is not None and last[0]() is x:  # q/k/v_proj read one tensor
                reduced = last[1]
            else:
                reduced = _reduce_rows(self._real_rows(x.detach()))
                self._last = (weakref.ref(x), reduced)
            lo, hi, sums, hist = reduced
            running.tokens += self._real
            if running.lo is None:
                running.lo, running.hi, running.sums, running.hist = lo, hi, sums, hist
                return
            assert running.hi is not None and running.sums is not None
            assert running.hist is not None
            # fmin/fmax: a NaN never replaces a number.
            running.lo = torch.fmin(running.lo, lo)
            running.hi = torch.fmax(running.hi, hi)
            running.sums = running.sums + sums
            running.hist = running.hist + hist

        return pre_hook

    def _real_rows(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        if self._rows is None or rows.shape[0] == self._real:
            return rows
        index = self._rows_on.get(rows.device)
        if index is None:  # one copy per device and batch, not one per module
            index = self._rows_on[rows.device] = self._rows.to(rows.device)
        return rows.index_select(0, index)

    def merged(self, device: torch.device, ranks: Ranks) -> dict[str, torch.Tensor]:
        """Every module's counters on ``device``, merged over the ranks: keyed
        ``MODULE/STAT``, per-channel ones as in CHANNEL_STATS, plus ``tokens`` and
        ``histogram``; on the CPU. Every rank must call it (collectives)."""
        los, his, sums, hists, tokens = [], [], [], [], []
        for r in self._running:
            f = r.in_features
            los.append(r.lo.to(device) if r.lo is not None else _full(f, math.inf, device))
            his.append(r.hi.to(device) if r.hi is not None else _full(f, -math.inf, device))
            sums.append(
                r.sums.to(device)
                if r.sums is not None
                else torch.zeros(3, f, dtype=torch.float64, device=device)
            )
            hists.append(
                r.hist.to(device)
                if r.hist is not None
                else torch.zeros(HIST_BINS, dtype=torch.int64, device=device)
            )
            tokens.append(r.tokens)
        lo = all_reduce(torch.cat(los), "min").cpu()
        hi = all_reduce(torch.cat(his), "max").cpu()
        total = all_reduce(torch.cat(sums, dim=1), "sum").cpu()
        hist = all_reduce(torch.stack(hists), "sum").cpu()
        counts = all_reduce(torch.tensor(tokens, dtype=torch.int64, device=device), "sum").cpu()
        out: dict[str, torch.Tensor] = {}
        start = 0
        for i, r in enumerate(self._running):
            end = start + r.in_features
            n = int(counts[i])
            low, high = lo[start:end].clone(), hi[start:end].clone()
            s = total[:, start:end]
            out[f"{r.name}/absmax"] = torch.maximum(low.neg(), high)
            out[f"{r.name}/min"] = low
            out[f"{r.name}/max"] = high
            out[f"{r.name}/mean_abs"] = (s[0] / max(n, 1)).clone()
            out[f"{r.name}/mean"] = (s[1] / max(n, 1)).clone()
            out[f"{r.name}/sum_squares"] = s[2].clone()
            out[f"{r.name}/tokens"] = torch.tensor([n], dtype=torch.int64)
            out[f"{r.name}/histogram"] = hist[i].clone()
            start = end
        return out

    def describe(self, channels: dict[str, torch.Tensor]) -> list[LinearInput]:
        """The per-module summary of ``merged`` counters, in module order."""
        return [_describe(r, channels) for r in self._running]


def _full(n: int, value: float, device: torch.device) -> torch.Tensor:
    return torch.full((n,), value, dtype=torch.float32, device=device)


def _describe(r: _Running, channels: dict[str, torch.Tensor]) -> LinearInput:
    absmax = channels[f"{r.name}/absmax"]
    tokens = int(channels[f"{r.name}/tokens"][0])
    hist = channels[f"{r.name}/histogram"]
    peak = finite_or_none(float(absmax.max())) if absmax.numel() and tokens else None
    median = finite_or_none(float(absmax.median())) if absmax.numel() and tokens else None
    elements = tokens * r.in_features
    mean_abs = float(channels[f"{r.name}/mean_abs"].sum()) / r.in_features if tokens else None
    return LinearInput(
        name=r.name,
        type=type(r.module).__name__,
        layer=layer_of(r.name),
        in_features=r.in_features,
        tokens=tokens,
        absmax=peak,
        argmax=int(absmax.argmax()) if peak is not None else None,
        median=median,
        outlier_ratio=peak / median if peak is not None and median else None,
        mean_abs=finite_or_none(mean_abs) if mean_abs is not None else None,
        percentiles={
            key: percentile_from_histogram(hist, q, elements, peak)
            for key, q in PERCENTILES.items()
        },
    )


class OutputSummary(HookGroup):
    """The trace statistics of every named module's output, pooled over every batch."""

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        modules = dict(model.named_modules())
        self._targets = [(n, modules[n]) for n in names]
        self._pooled: dict[str, torch.Tensor] = {}
        self._pending: list[tuple[str, TokenPartials]] = []
        self._partials = OncePerTensor()
        self._batch: Batch | None = None

    def _register(self) -> None:
        for name, module in self._targets:
            self._keep(module.register_forward_hook(self._make_hook(name)))

    def begin(self, batch: Batch) -> None:
        self.fold()
        self._batch = batch

    def _make_hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            tensor = main_tensor(output)
            batch = self._batch
            if tensor is None or batch is None or tensor.device.type == "meta":
                return
            b, t = batch.layout.batch, batch.layout.tokens
            rows = tensor.dim() >= 2 and tuple(tensor.shape[:2]) == (b, t)
            if rows or (tensor.dim() >= 1 and tensor.shape[0] == b * t):
                view = tensor.reshape(b, t, -1)
            else:  # not one row per token: no per-token summary
                return
            self._pending.append((name, self._partials.of(tensor, view)))

        return hook

    def fold(self) -> None:
        """Pool the last batch's partials into the running ones (real tokens only)."""
        batch, pending = self._batch, self._pending
        self._pending = []
        self._partials.clear()
        if batch is None or not pending:
            return
        valid = batch.layout.valid.reshape(-1) if batch.layout.valid is not None else None
        groups: dict[torch.device, list[tuple[str, TokenPartials]]] = {}
        for name, partials in pending:
            groups.setdefault(partials.values.device, []).append((name, partials))
        for device, calls in groups.items():
            full = exact_partials([p for _, p in calls])  # [M, B, T, 8]
            flat = full.reshape(full.shape[0], -1, len(PARTIALS))
            fresh = pool_partials(flat, valid)  # [M, 8]
            old = torch.stack(
                [self._pooled.get(name, empty_partial(device)).to(device) for name, _ in calls]
            )
            for (name, _), row in zip(
                calls, pool_partials(torch.stack([old, fresh], 1)), strict=True
            ):
                self._pooled[name] = row

    def merged(self, device: torch.device) -> list[tuple[str, nn.Module, TensorStats]]:
        """Every module that ran and its statistics, pooled over the ranks (a collective)."""
        self.fold()
        rows = torch.stack(
            [self._pooled.get(name, empty_partial(device)).to(device) for name, _ in self._targets]
        )
        everyone = gather(rows)  # [world, M, 8]
        pooled = pool_partials(everyone.transpose(0, 1))
        stats = finalize_stats([finalize_partials(pooled)])
        ran = (pooled[:, PARTIALS.index("elements")] > 0).tolist()
        # A container that is never called (the ModuleList of layers) has no output.
        return [(n, m, s) for (n, m), s, r in zip(self._targets, stats, ran, strict=True) if r]


def output_names(model: nn.Module) -> list[str]:
    """Every module that runs in a forward pass: its output gets a summary."""
    never = adapter_of(model).never_called
    return [n for n in module_names(model) if n not in never]


def calibrate(
    loaded: LoadedModel,
    samples: Iterable[Sequence[int]],
    *,
    settings: CalibrationSettings | None = None,
    ranks: Ranks | None = None,
    device: torch.device | str = "cpu",
    advance: Callable[[int, int], None] | None = None,
) -> CalibrationResult:
    """Run the tokenized ``samples`` in batches of ``settings.batch_size`` and collect the
    statistics of the module docstring.

    Under a launcher (``ranks``) this rank runs its share of the batches and
    every rank must call this; ``device`` is where the counters meet for the
    collectives (the CPU for gloo). ``advance(samples, tokens)`` hears of every
    batch: this rank's own, counted for the whole round of ranks on the leader.
    """
    settings = settings or CalibrationSettings()
    ranks = ranks or Ranks()
    model = loaded.model
    runner = Runner(loaded, batch_size=settings.batch_size, verb="calibrate")
    mine = (b for i, b in enumerate(runner.token_batches(samples)) if ranks.owns(i))
    tokens = 0
    count = 0
    comm = torch.device(device)
    with (
        ChannelStats(model, linear_names(model)) as channels,
        OutputSummary(model, output_names(model)) as outputs,
    ):
        for batch, output in runner.run_batches(mine, [channels, outputs]):
            del output  # the logits are not kept; free them before the next batch
            tokens += batch.real_tokens
            count += batch.size
            if advance is not None:
                advance(batch.size * ranks.world, batch.real_tokens * ranks.world)
        totals = all_reduce(torch.tensor([count, tokens], dtype=torch.int64, device=comm), "sum")
        per_channel = channels.merged(comm, ranks)
        summaries = outputs.merged(comm)
        described = channels.describe(per_channel)
    count, tokens = (int(v) for v in totals.cpu().tolist())
    if count == 0:
        raise UsageError("the input holds no samples: give at least one line of text")
    return CalibrationResult(
        info=loaded.info,
        settings=settings,
        samples=count,
        tokens=tokens,
        world_size=ranks.world,
        inputs=tuple(described),
        outputs=tuple(
            ModuleOutput(name=n, type=type(m).__name__, layer=layer_of(n), stats=s)
            for n, m, s in summaries
        ),
        channels=per_channel,
    )


def choose_samples(
    plan: Plan,
    samples_read: Iterable[str],
    *,
    model: str,
    samples: int | None,
    seed: int,
    seq_len: int | None,
    pack: bool,
    allow_fewer: bool,
) -> tuple[list[str], int]:
    """The samples to run, and the model's positions; checked against its config. The
    input is read to its end here: a seeded shuffle needs all of it."""
    texts = list(samples_read)
    max_positions = int(config_value(plan.config, "max_position_embeddings"))
    if seq_len is not None and seq_len > max_positions:
        raise UsageError(
            f"--seq-len {seq_len} is more than the {max_positions} positions of {model}"
        )
    if pack:  # --samples counts blocks: the shuffled order is read until they are full
        order = shuffled(len(texts), seed) if samples is not None else range(len(texts))
        return [texts[i] for i in order], max_positions
    return choose(texts, samples, seed=seed, allow_fewer=allow_fewer), max_positions


def compute(
    ctx: Context,
    plan: Plan | None,
    texts: Iterable[str],
    *,
    model: str,
    outputs: dict[str, str],
    **values: Any,
) -> Iterator[CalibrationResult]:
    """The calibrate job of one process, where the model is: it writes the files, and
    yields the result without its per-channel tensors (the files hold them)."""
    chosen, max_positions = choose_samples(plan_of(plan), texts, model=model, **_choice(values))
    loaded = ctx.model()
    comm = "cuda" if loaded.device.startswith("cuda") else "cpu"
    result = calibrate_samples(loaded, chosen, max_positions, values, Ranks(), comm, ctx.advance)
    write_files(result, {k: Path(v) for k, v in outputs.items()}, ctx.note)
    yield dataclasses.replace(result, channels={})


def _choice(values: dict[str, Any]) -> dict[str, Any]:
    keys = ("samples", "seed", "seq_len", "pack", "allow_fewer")
    return {key: values[key] for key in keys}


def rank_device(device: str, ranks: Ranks) -> str:
    """The device this rank computes on: its own GPU under a launcher."""
    if device in ("auto", "cuda"):
        if torch.cuda.is_available():
            return f"cuda:{ranks.local_rank}" if ranks.many else "cuda"
        return "cpu" if device == "auto" else device
    return device


def calibrate_ranks(
    ctx: Context,
    load: LoadSettings,
    ranks: Ranks,
    *,
    text: str | None,
    file: Path | None,
    outputs: Mapping[str, tuple[Path | None, str]],
    force: bool,
    values: dict[str, Any],
) -> CalibrationResult | None:
    """Calibrate as one of the ranks a launcher started; rank 0 writes the files and gets
    the result, the others None.

    Every rank checks its options and reads the samples (``text`` or ``file``); an error
    on any rank stops them all (``agree``). ``outputs`` are the files asked for, by option,
    with their suffixes (``check_output_paths``). ``ctx`` loads the model onto this
    rank's device; its progress and notes are the leader's.
    """
    device = rank_device(load.device, ranks)
    backend = "nccl" if device.startswith("cuda") else "gloo"
    with process_group(ranks, backend):
        error: str | None = None
        texts: list[str] = []
        max_positions = 0
        paths: dict[str, Path] = {}
        try:
            paths = check_output_paths(outputs, force=force) if ranks.leader else {}
            check_sample_options(
                seq_len=values["seq_len"], pack=values["pack"], samples=values["samples"]
            )
            plan = preflight(load, batch_size=values["batch_size"])
            read = read_samples(text, file, field=values["field"])
            texts, max_positions = choose_samples(plan, read, model=load.model, **_choice(values))
        except OptinspectError as e:
            error = str(e)
        settings = {k: values[k] for k in ("field", *_choice(values), "batch_size")}
        fingerprint = {
            "model": load.model,
            "quant": load.quant,
            "dtype": load.dtype,
            "settings": json.dumps(settings),
            "samples": hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16],
        }
        agree(ranks, fingerprint, error)
        loaded = ctx.model(device=device) if load.device_map is None else ctx.model()
        comm = device if device.startswith("cuda") else "cpu"
        # Every rank tokenizes every sample: the leader alone tells what --truncate cut.
        with notes_to(ctx.note if ranks.leader else None):
            result = calibrate_samples(
                loaded, texts, max_positions, values, ranks, comm, ctx.advance
            )
    if not ranks.leader:
        return None
    write_files(result, paths, ctx.note)
    return result


def calibrate_samples(
    loaded: LoadedModel,
    texts: list[str],
    max_positions: int,
    values: dict[str, Any],
    ranks: Ranks,
    comm: str,
    advance: Callable[..., None],
) -> CalibrationResult:
    """Tokenize (and pack) the chosen samples and run them through ``loaded``; ``values``
    are the command's (``--seq-len``, ``--pack``, ...), ``comm`` where the ranks meet."""
    seq_len = values["seq_len"]
    tokenized = tokenize_samples(
        loaded.tokenizer,
        texts,
        seq_len=seq_len,
        max_positions=min(max_positions, loaded.max_positions),
        truncate=values["truncate"],
    )
    if values["pack"]:
        assert seq_len is not None
        ids = pack_blocks(tokenized, seq_len, values["samples"], allow_fewer=values["allow_fewer"])
    else:
        ids = list(tokenized)
    settings = CalibrationSettings(
        file=values["source"],
        field=values["field"],
        samples=values["samples"],
        seed=values["seed"],
        seq_len=seq_len,
        pack=values["pack"],
        batch_size=values["batch_size"],
        truncate=values["truncate"],
        allow_fewer=values["allow_fewer"],
    )
    advance(0, 0, totals=(len(ids), sum(len(i) for i in ids)))
    return calibrate(loaded, ids, settings=settings, ranks=ranks, device=comm, advance=advance)


def write_files(
    result: CalibrationResult, paths: dict[str, Path], note: Callable[[str], None]
) -> None:
    """Each requested file (by option), atomically; a note names it (``wrote PATH``, as
    ``trace --save`` and ``--plot`` say)."""
    for option, path in paths.items():
        if option == "--act-scales":
            save_torch(path, result.act_scales())
        elif option == "--act-shifts":
            save_torch(path, result.act_shifts())
        else:
            save_safetensors(path, result.tensors(), result.metadata())
        note(f"wrote {path}")
