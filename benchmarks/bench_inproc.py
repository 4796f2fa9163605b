"""In-process sections: hook overhead, peers, peak memory of one call, batch throughput,
calibrate against bare forwards.

Every runner is a zero-argument callable doing one whole job (hook, forward, statistics
on the host), so the same runners serve the timings and the memory worker.
"""

from __future__ import annotations

import copy
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from bench_report import Row, Section
from bench_util import (
    DASH,
    LOW_MMAP,
    TIMES,
    Series,
    fmt_mib,
    fmt_ratio,
    fmt_times,
    interleave,
    last_line,
    sentences,
    status_mib,
    token_ids,
    version_of,
    wrap_loaded,
)

Runner = Callable[[], object]
BARE = "bare forward"
OPTINSPECT = "optinspect: every module hooked, statistics on"
HOOKS_ONLY = "optinspect: every module hooked, statistics off"
EAGER_STATS = "optinspect: every module hooked, eager torch statistics (OPTINSPECT_STATS=eager)"
NAIVE = "naive: forward hooks, .item() per statistic per module"
NNSIGHT_SAVE = "nnsight: cache every module's output"
NNSIGHT = "nnsight: cache every module's output, then the same statistics"
TL_FORWARD = "TransformerLens: forward, no cache"
TL_SAVE = "TransformerLens: run_with_cache"
TL = "TransformerLens: run_with_cache, then the same statistics"
PEERS = ("nnsight", "transformer_lens")
#: The memory worker's tools, and the runner each measures.
MEMORY_TOOLS = {"bare": BARE, "optinspect": OPTINSPECT, "naive": NAIVE, "nnsight": NNSIGHT}
MEMORY_TOOLS["transformer_lens"] = TL


def rounds(series: dict[str, Series]) -> str:
    count = len(next(iter(series.values())).times)
    return f"median (min{DASH}max) of {count} round-robin rounds; ratios paired within a round"


def paired(s: Series) -> str:
    """A variant's ratio to the bare forward of the same round, then its wall time."""
    times = fmt_times(s.times)
    return times if s.label == BARE else f"{fmt_ratio(s.ratios)} bare; {times}"


def every_module(model: Any) -> list[str]:
    """The names optinspect hooks for ``--filter '*'``: every named submodule."""
    from optinspect.engine.selection import select_names

    layers = int(model.config.num_hidden_layers)
    return select_names((n for n, _ in model.named_modules()), layers, None, ("*",))


def reduce_outputs(outputs: list[Any]) -> list[Any]:
    """optinspect's statistics over tensors another tool saved; one host transfer."""
    from optinspect.engine.capture import main_tensor
    from optinspect.engine.stats import finalize_stats, summarize_tensor

    tensors = [t for t in map(main_tensor, outputs) if t is not None and t.is_floating_point()]
    return finalize_stats([summarize_tensor(t) for t in tensors])


def bare_runner(model: Any, ids: Any) -> Runner:
    import torch

    def run() -> object:
        with torch.inference_mode():
            return model(input_ids=ids, use_cache=False)

    return run


def optinspect_runner(model: Any, ids: Any, names: list[str], stats: bool = True) -> Runner:
    """optinspect's capture as ``iter_trace`` drives it: hook, one forward, collect records."""
    import torch

    from optinspect.engine.batch import Batch, BatchLayout
    from optinspect.engine.capture import capture
    from optinspect.engine.runner import forward

    mask, rows = torch.ones_like(ids), ids.shape[0]
    batch = Batch(("",) * rows, ((),) * rows, ids, mask, BatchLayout.from_mask(mask.cpu()))

    def run() -> object:
        with capture(model, names, stats=stats) as cap:
            forward(model, batch, [cap])
            return cap.collect()

    return run


def eager_statistics(run: Runner) -> Runner:
    """``run`` with the eager torch statistics forced (``OPTINSPECT_STATS=eager``)."""

    def wrapped() -> object:
        previous = os.environ.get("OPTINSPECT_STATS")
        os.environ["OPTINSPECT_STATS"] = "eager"
        try:
            return run()
        finally:
            os.environ.pop("OPTINSPECT_STATS")
            if previous is not None:
                os.environ["OPTINSPECT_STATS"] = previous

    return wrapped


def naive_runner(model: Any, ids: Any, names: list[str]) -> Runner:
    """What a first attempt looks like: a forward hook per module, nine ``.item()`` each."""
    import torch

    from optinspect.engine.capture import main_tensor

    modules = dict(model.named_modules())

    def run() -> object:
        rows: list[list[float]] = []

        def hook(module: Any, args: Any, output: Any) -> None:
            if (tensor := main_tensor(output)) is not None:
                x = tensor.detach().float()
                sums = (x.mean(), x.std(correction=0), x.min(), x.max(), x.abs().max())
                sums += (x.pow(2).mean().sqrt(), (x == 0).float().mean())
                rows.append([v.item() for v in (*sums, x.isnan().sum(), x.isinf().sum())])

        handles = [modules[name].register_forward_hook(hook) for name in names]
        try:
            with torch.inference_mode():
                model(input_ids=ids, use_cache=False)
        finally:
            for handle in handles:
                handle.remove()
        return rows

    return run


def overhead(model: Any, tokens: list[int], repeats: int, threads: list[int | None]) -> Section:
    """Bare forward against optinspect (statistics on, off, eager) and the naive baseline,
    at each thread count (None: torch's default); the goals at the default threads only."""
    import torch

    from optinspect.engine import fused

    names, before = every_module(model), torch.get_num_threads()
    kernel = fused.library_path().name if fused.available() else None  # type: ignore[union-attr]
    params = sum(p.numel() for p in model.parameters()) / 1e6
    rows = [
        Row("model", f"random weights, {params:.1f} M parameters, float32, CPU", "one sentence"),
        Row("modules hooked", str(len(names)), "`--filter '*'`: every named submodule"),
        Row("statistics on the CPU", f"compiled kernel `{kernel}`" if kernel else "eager torch"),
    ]
    goals = {max(tokens): 1.10, min(tokens): 1.15}
    for count in threads:
        torch.set_num_threads(count or before)
        where = f"{torch.get_num_threads()} thread" + ("s" if torch.get_num_threads() > 1 else "")
        try:
            for n in tokens:
                ids = token_ids(n)
                runs = {BARE: bare_runner(model, ids), NAIVE: naive_runner(model, ids, names)}
                runs[OPTINSPECT] = optinspect_runner(model, ids, names)
                runs[HOOKS_ONLY] = optinspect_runner(model, ids, names, stats=False)
                if kernel:
                    runs[EAGER_STATS] = eager_statistics(optinspect_runner(model, ids, names))
                series = interleave(runs, repeats, 1, baseline=BARE)
                for label in (BARE, OPTINSPECT, EAGER_STATS, HOOKS_ONLY, NAIVE):
                    if label not in series:
                        continue
                    row = Row(
                        f"{n} tokens, {where}: {label}", paired(series[label]), rounds(series)
                    )
                    if label == OPTINSPECT and count is None:
                        met = series[label].ratio <= goals[n]
                        goal = f"\u2264 {goals[n]:.2f}{TIMES} the bare forward"
                        row = Row(row.figure, row.value, row.how, goal, met)
                    rows.append(row)
                on, off = series[OPTINSPECT].ratio, series[HOOKS_ONLY].ratio
                split = f"hooks and records {off - 1:+.0%}, statistics {on - off:+.0%}"
                if EAGER_STATS in series:
                    split += f" ({series[EAGER_STATS].ratio - off:+.0%} eager)"
                how = "the median ratios: statistics off less 1, statistics on less off"
                rows.append(Row(f"{n} tokens, {where}: where the overhead goes", split, how))
        finally:
            torch.set_num_threads(before)
    return Section("overhead", rows)


def nnsight_runners(model: Any, tokenizer: Any, ids: Any) -> tuple[dict[str, Runner], str]:
    import torch
    from nnsight import NNsight

    wrapped = NNsight(copy.deepcopy(model))

    def cached() -> list[Any]:
        with torch.inference_mode(), wrapped.trace(ids, use_cache=False) as tracer:
            cache = tracer.cache()
        return [cache[key].output for key in cache.keys()]  # noqa: SIM118 (a CacheView)

    runs = {NNSIGHT_SAVE: cached, NNSIGHT: lambda: reduce_outputs(cached())}
    return runs, f"nnsight {version_of('nnsight')}: `NNsight(model)`, `tracer.cache()`"


def transformer_lens_runners(model: Any, tokenizer: Any, ids: Any) -> tuple[dict, str]:
    import torch
    import transformer_lens

    with tempfile.TemporaryDirectory() as folder:  # the bridge reads the config from a folder
        model.config.save_pretrained(folder)
        boot = transformer_lens.TransformerBridge.boot_transformers
        tl = boot(folder, hf_model=copy.deepcopy(model), tokenizer=tokenizer, device="cpu").eval()

    def forward() -> object:
        with torch.inference_mode():
            return tl(ids)

    def cached() -> list[Any]:
        with torch.inference_mode():
            return list(tl.run_with_cache(ids)[1].values())

    runs = {TL_FORWARD: forward, TL_SAVE: cached, TL: lambda: reduce_outputs(cached())}
    how = "`TransformerBridge.boot_transformers(config folder, hf_model=copy of the model)`"
    return runs, f"TransformerLens {version_of('transformer_lens')}: {how}, `run_with_cache`"


def peer_runners(model: Any, tokenizer: Any, ids: Any, tools: tuple = PEERS) -> tuple[dict, dict]:
    """Each peer on its own copy of the model (both change what they wrap); one that fails
    leaves its exact error in the notes."""
    runs: dict[str, Runner] = {}
    notes = {}
    for tool in tools:
        make = nnsight_runners if tool == "nnsight" else transformer_lens_runners
        try:
            found, notes[tool] = make(model, tokenizer, ids)
            runs |= found
        except Exception as e:  # a third-party tool that fails is a finding, not a crash
            notes[tool] = f"did not run: `{type(e).__name__}: {last_line(str(e))}`"
    return runs, notes


def peers(model: Any, tokenizer: Any, tokens: list[int], repeats: int) -> Section:
    """Peers against the bare forward and optinspect, round-robin in one process."""
    names, rows, notes = every_module(model), [], {}
    for n in tokens:
        ids = token_ids(n)
        found, notes = peer_runners(model, tokenizer, ids)
        runs = {BARE: bare_runner(model, ids), OPTINSPECT: optinspect_runner(model, ids, names)}
        counts = {OPTINSPECT: sum(r.stats is not None for r in runs[OPTINSPECT]()[0])}  # type: ignore[index]
        counts |= {k: len(v()) for k, v in found.items() if k in (NNSIGHT, TL)}
        series = interleave(runs | found, repeats, 1, baseline=BARE)
        for label, s in series.items():
            summarised = f"; {counts[label]} tensors summarised" if label in counts else ""
            rows.append(Row(f"{n} tokens: {label}", paired(s), rounds(series) + summarised))
        del runs, found
        gc.collect()
    return Section("peers", rows + [Row(tool, note, "what ran") for tool, note in notes.items()])


def memory_worker(tool: str, shape: str, tokens: int) -> dict[str, Any]:
    """Peak RSS of one call of ``tool``'s runner above the resident baseline, in MiB; run
    in a fresh process, after one untimed call (lazy set-up)."""
    from bench_util import build_model, tiny_tokenizer

    model, ids = build_model(shape), token_ids(tokens)
    runs, notes = peer_runners(model, tiny_tokenizer(), ids, (tool,)) if tool in PEERS else ({}, {})
    if tool in PEERS and MEMORY_TOOLS[tool] not in runs:
        return {"tool": tool, "error": notes[tool]}
    if tool in ("optinspect", "naive"):
        make = naive_runner if tool == "naive" else optinspect_runner
        runs[MEMORY_TOOLS[tool]] = make(model, ids, every_module(model))
    runner = runs.get(MEMORY_TOOLS[tool]) or bare_runner(model, ids)
    bare_runner(model, ids)()
    runner()
    gc.collect()
    baseline = status_mib("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:  # VmHWM := VmRSS (Linux >= 4.0)
            f.write("5")
    except OSError:
        return {"tool": tool, "error": "cannot reset the peak RSS (/proc/self/clear_refs)"}
    result = runner()
    peak = status_mib("VmHWM")
    del result
    return {"tool": tool, "baseline_mib": baseline, "extra_mib": peak - baseline}


def memory(shape: str, tokens: int, tools: list[str]) -> Section:
    """Each tool's peak memory for one call, each in a fresh ``run.py --worker`` process."""
    how = (
        f"{tokens} tokens, a fresh process, glibc's mmap threshold fixed at 64 KiB: VmHWM of a "
        "second call (reset through `/proc/self/clear_refs`) less the RSS before it"
    )
    rows = []
    for tool in tools:
        argv = [sys.executable, os.path.join(os.path.dirname(__file__), "run.py"), "--worker"]
        env = {**os.environ, **LOW_MMAP}
        argv.append(f"memory:{tool}:{shape}:{tokens}")
        proc = subprocess.run(argv, capture_output=True, text=True, env=env)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        got = json.loads(lines[-1]) if proc.returncode == 0 and lines else {}
        value = f"did not run: `{got.get('error') or last_line(proc.stderr)}`"
        if "extra_mib" in got:
            value = (
                f"{fmt_mib(got['extra_mib'])} above a baseline of {fmt_mib(got['baseline_mib'])}"
            )
        rows.append(Row(MEMORY_TOOLS[tool], value, how))
    return Section("memory", rows)


def batch_throughput(model: Any, tokenizer: Any, count: int, batch: int, repeats: int) -> Section:
    """Sentences per second: optinspect's ``iter_trace`` against bare batched forwards."""
    import torch

    from optinspect.analyses.trace import iter_trace

    loaded, texts = wrap_loaded(model, tokenizer), sentences(count, (7, 10))
    encoded = [tokenizer(text)["input_ids"] for text in texts]
    batches = []
    for start in range(0, count, batch):  # right-padded, as optinspect pads a batch
        rows = encoded[start : start + batch]
        ids = torch.ones(len(rows), max(map(len, rows)), dtype=torch.long)  # 1 is </pad>
        mask = torch.zeros_like(ids)
        for i, row in enumerate(rows):
            ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
        batches.append((ids, None if bool(mask.all()) else mask))

    def bare() -> None:
        for ids, mask in batches:
            with torch.inference_mode():
                model(input_ids=ids, attention_mask=mask, use_cache=False)

    def traced() -> None:
        for _ in iter_trace(loaded, texts, filters=("*",), batch_size=batch):
            pass

    series = interleave({BARE: bare, OPTINSPECT: traced}, repeats, 1, baseline=BARE)
    n = list(map(len, encoded))
    how = f"{rounds(series)}; {count} sentences of {min(n)}{DASH}{max(n)} tokens "
    how += f"(mean {statistics.mean(n):.1f}), batch {batch}"
    rows = [
        Row(f"{BARE}, {count} sentences", fmt_times(series[BARE].times), how + ", padded before"),
        Row(
            f"{OPTINSPECT}, {count} sentences",
            paired(series[OPTINSPECT]),
            how + ", in `iter_trace`",
        ),
    ]
    for label in (BARE, OPTINSPECT):
        rates = [count / t for t in series[label].times]
        value = f"{statistics.median(rates):.1f}/s ({min(rates):.1f}{DASH}{max(rates):.1f})"
        rows.append(Row(f"{label}: sentences/s", value, how))
    relative, goal = 1 / series[OPTINSPECT].ratio, "\u2265 0.87 of the bare forward's"
    how = "1 / the median paired time ratio"
    rows.append(Row("optinspect's sentences/s", f"{relative:.2f}", how, goal, relative >= 0.87))
    return Section("batch", rows)


def calibrate_overhead(model: Any, tokenizer: Any, samples: int, tokens: int, repeats: int) -> Row:
    """``calibrate`` against bare forwards of the same batches (8 samples of ``tokens``)."""
    import torch

    from optinspect.analyses.calibrate import CalibrationSettings, calibrate

    loaded, ids = wrap_loaded(model, tokenizer), token_ids(tokens, samples)

    def bare() -> None:
        for start in range(0, samples, 8):
            with torch.inference_mode():
                model(input_ids=ids[start : start + 8], use_cache=False)

    def calib() -> None:
        calibrate(loaded, ids.tolist(), settings=CalibrationSettings(batch_size=8))

    series = interleave({BARE: bare, "calibrate": calib}, repeats, 1, baseline=BARE)
    value = f"{paired(series['calibrate'])}, bare {fmt_times(series[BARE].times)}"
    how = f"{rounds(series)}; {samples} samples of {tokens} random ids, batch 8, in process"
    return Row("`calibrate` against bare forwards of the same batches", value, how)
