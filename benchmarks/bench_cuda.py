"""The CUDA section: an opt-1.3b-shaped model in 8-bit and float16 where CUDA is.

``device="cpu"`` runs the same code at the small shape on the CPU (no peak memory, no
Triton): ``scripts/gpu-check.sh --rehearse`` does, so only what CUDA itself does is new
on a GPU. Its JSON (``run.py --only cuda --json PATH``) is what gpu-check reads.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_inproc import (
    BARE,
    EAGER_STATS,
    NNSIGHT,
    OPTINSPECT,
    eager_statistics,
    every_module,
    optinspect_runner,
    reduce_outputs,
)
from bench_report import Row, Section
from bench_util import (
    DASH,
    fmt_ratio,
    fmt_seconds,
    fmt_times,
    interleave,
    last_line,
    opt_config,
    save_checkpoint,
    token_ids,
)


def on_gpu(device: str) -> bool:
    return device.startswith("cuda")


def sync(device: str, free: bool = False) -> None:
    """Wait for the GPU's queued work; ``free``: also empty its cache and reset the peak."""
    if on_gpu(device):
        import torch

        torch.cuda.synchronize()
        if free:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str, fn: Any) -> float | None:
    """The peak GPU memory allocated while ``fn()`` runs, in GiB; None on the CPU."""
    sync(device, free=True)
    fn()
    if not on_gpu(device):
        return None
    import torch

    return torch.cuda.max_memory_allocated() / 1024**3


def triton_state(device: str) -> str:
    """Whether the statistics of a ``device`` run took the Triton kernel."""
    from optinspect.engine import fused_triton

    if not on_gpu(device):
        return "not used on the CPU"
    if fused_triton._broken is not None:  # it falls back to eager, with one warning
        return f"failed, eager used: {fused_triton._broken}"
    installed = fused_triton._kernel(False) is not None
    return "in use" if installed else "Triton not installed, eager used"


def one_quant(
    folder: Path, quant: str, repeats: int, warmup: int, tokens: int, device: str
) -> dict[str, Any]:
    import torch

    from optinspect import load

    sync(device, free=True)
    start = time.perf_counter()
    model = load(str(folder), quant=quant, device=device, dtype="float16").model
    sync(device)
    row: dict[str, Any] = {"quant": quant, "load_s": time.perf_counter() - start}
    ids = token_ids(tokens).to(device)
    traced_once = optinspect_runner(model, ids, every_module(model))
    eager_once = eager_statistics(traced_once)

    def bare() -> None:
        with torch.inference_mode():
            model(input_ids=ids, use_cache=False)
        sync(device)

    def traced() -> None:
        traced_once()
        sync(device)

    def traced_eager() -> None:
        eager_once()
        sync(device)

    runs = {BARE: bare, OPTINSPECT: traced, EAGER_STATS: traced_eager}
    row["series"] = interleave(runs, repeats, warmup, baseline=BARE)
    row["triton"] = triton_state(device)
    for label, fn in ((BARE, bare), (OPTINSPECT, traced)):
        row[f"peak_gib {label}"] = peak_gib(device, fn)
    try:  # nnsight wraps the model it is given, so it goes last, on the same model
        from nnsight import NNsight

        wrapped = NNsight(model)

        def nnsight_stats() -> None:
            with torch.inference_mode(), wrapped.trace(ids, use_cache=False) as tracer:
                cache = tracer.cache()
            reduce_outputs([cache[key].output for key in cache.keys()])  # noqa: SIM118
            sync(device)

        runs = {BARE: bare, NNSIGHT: nnsight_stats}
        row["nnsight"] = interleave(runs, repeats, warmup, BARE)[NNSIGHT]
        row[f"peak_gib {NNSIGHT}"] = peak_gib(device, nnsight_stats)
    except Exception as e:  # a peer failing is reported, not fatal
        row["nnsight_error"] = f"{type(e).__name__}: {last_line(str(e))}"
    return row


def cuda(repeats: int, warmup: int, quick: bool, tokens: int, device: str = "cuda") -> Section:
    """Load time, forward, trace ratio, peak GPU memory and nnsight, per quantization."""
    import torch

    from optinspect.model.quiet import no_hub_kernels
    from optinspect.model.spec import RANDOM_WEIGHTS_KEY

    with no_hub_kernels():  # as optinspect itself loads: transformers' hub kernels stay out
        from transformers import OPTForCausalLM

        config = opt_config("small" if quick else "opt-1.3b")
        setattr(config, RANDOM_WEIGHTS_KEY, True)
        torch.manual_seed(0)
        with torch.device(device):
            model = OPTForCausalLM(config).half().eval()
    folder = save_checkpoint(model, Path(tempfile.mkdtemp(prefix="optinspect-bench-cuda-")))
    del model
    sync(device, free=True)
    name = (
        torch.cuda.get_device_name(0) if on_gpu(device) else "cpu (a rehearsal, not a measurement)"
    )
    shape = "small" if quick else "opt-1.3b shape"
    data: dict[str, Any] = {"device": name, "model": shape, "tokens": tokens, "rows": []}
    try:
        for quant in ("8bit", "none"):
            data["rows"].append(one_quant(folder, quant, repeats, warmup, tokens, device))
            sync(device, free=True)  # that quantization's model went with one_quant's frame
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    how = f"{name}; {shape}, random weights, float16; {tokens} tokens; median (min{DASH}max) "
    how += f"of {repeats} rounds, ratios paired with the bare forward of the round"
    rows = []
    for r in data["rows"]:
        s, q = r["series"], f"`--quant {r['quant']}`"
        peaks = [r[f"peak_gib {k}"] for k in (BARE, OPTINSPECT)]
        peak = " / ".join(DASH if p is None else f"{p:.2f}" for p in peaks) + " GiB"
        nn = fmt_ratio(r["nnsight"].ratios) if "nnsight" in r else r["nnsight_error"]
        rows += [
            Row(f"{q}: load", fmt_seconds(r["load_s"]), how),
            Row(f"{q}: bare forward", fmt_times(s[BARE].times), how),
            Row(f"{q}: optinspect, Triton {r['triton']}", fmt_ratio(s[OPTINSPECT].ratios), how),
            Row(f"{q}: optinspect, eager statistics", fmt_ratio(s[EAGER_STATS].ratios), how),
            Row(f"{q}: peak GPU memory, bare / traced", peak, "`max_memory_allocated`"),
            Row(f"{q}: nnsight cache and the same statistics", nn, how),
        ]
    return Section("cuda", rows, data)
