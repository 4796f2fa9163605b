"""The CUDA section: runs only where ``torch.cuda.is_available()``.

UNTESTED ON A GPU: this code was written on a machine without one. Its Python runs
in every CPU test suite all the same (``device="cpu"``, the small shape, through
``scripts/gpu-check.sh --rehearse``), so only what CUDA itself does is new on a GPU.
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
from bench_models import OPT_1_3B, OPT_SMALL, opt_config, token_ids
from bench_util import interleave, last_line

TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")


def make_checkpoint(shape: dict[str, int], device: str = "cuda") -> Path:
    """A random-weight float16 checkpoint with the tiny tokenizer, in a temporary folder."""
    import torch

    from optinspect.model.quiet import no_hub_kernels
    from optinspect.model.spec import RANDOM_WEIGHTS_KEY, tiny_path

    # As optinspect itself loads: transformers' hub-kernel integration stays out.
    with no_hub_kernels():
        from transformers import OPTForCausalLM

        config = opt_config(shape)
        setattr(config, RANDOM_WEIGHTS_KEY, True)
        torch.manual_seed(0)
        with torch.device(device):
            model = OPTForCausalLM(config).half().eval()
    folder = Path(tempfile.mkdtemp(prefix="optinspect-bench-cuda-"))
    model.save_pretrained(folder)
    del model
    empty_cache(device)
    for name in TOKENIZER_FILES:
        shutil.copy(tiny_path() / name, folder / name)
    return folder


def cuda_section(
    repeats: int, warmup: int, quick: bool, tokens: int = 256, device: str = "cuda"
) -> dict[str, Any]:
    """Load time, forward, trace ratio, peak GPU memory and nnsight, per quantization.

    ``device="cpu"`` runs the same code on the CPU (no peak memory, no Triton): a
    rehearsal of this section where no GPU is, not a measurement.
    """
    import torch

    from optinspect.model.loading import load_model

    shape = OPT_SMALL if quick else OPT_1_3B
    folder = make_checkpoint(shape, device)
    cuda = device.startswith("cuda")
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu (a rehearsal, not a measurement)",
        "model": "opt-1.3b shape" if not quick else "small",
        "tokens": tokens,
        "rows": [],
    }
    try:
        for quant in ("8bit", "none"):
            row = _one_quant(folder, quant, repeats, warmup, tokens, load_model, device)
            report["rows"].append(row)
            empty_cache(device)  # that quantization's model went with _one_quant's frame
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return report


def synchronize(device: str) -> None:
    """Wait for the GPU's queued work (nothing to wait for on the CPU)."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def empty_cache(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def peak_gib(device: str, fn: Any) -> float | None:
    """The peak GPU memory allocated while ``fn()`` runs, in GiB; None on the CPU."""
    if not device.startswith("cuda"):
        fn()
        return None
    import torch

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    return torch.cuda.max_memory_allocated() / 1024**3


def triton_state(device: str) -> str:
    """Whether the statistics of a ``device`` run took the Triton kernel."""
    from optinspect.engine import fused_triton

    if not device.startswith("cuda"):
        return "not used on the CPU"
    # The Triton kernel falls back to eager (with one warning) if it cannot run here.
    if fused_triton._broken is not None:
        return f"failed, eager used: {fused_triton._broken}"
    if fused_triton._kernel(False) is None:
        return "Triton not installed, eager used"
    return "in use"


def _one_quant(
    folder: Path,
    quant: str,
    repeats: int,
    warmup: int,
    tokens: int,
    load_model: Any,
    device: str = "cuda",
) -> dict[str, Any]:
    import torch

    empty_cache(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    loaded = load_model(str(folder), quant=quant, device=device, dtype="float16")
    synchronize(device)
    row: dict[str, Any] = {"quant": quant, "load_s": time.perf_counter() - start}
    model = loaded.model
    ids = token_ids(tokens).to(device)
    names = every_module(model)
    traced_once = optinspect_runner(model, ids, names)

    def bare() -> None:
        with torch.inference_mode():
            model(input_ids=ids, use_cache=False)
        synchronize(device)

    def traced() -> None:
        traced_once()
        synchronize(device)

    eager_once = eager_statistics(traced_once)

    def traced_eager() -> None:
        eager_once()
        synchronize(device)

    runs = {BARE: bare, OPTINSPECT: traced, EAGER_STATS: traced_eager}
    series = interleave(runs, repeats, warmup, baseline=BARE)
    row["series"] = series
    row["triton"] = triton_state(device)
    for label, fn in ((BARE, bare), (OPTINSPECT, traced)):
        row[f"peak_gib {label}"] = peak_gib(device, fn)
    # nnsight wraps the model it is given, so it goes last, on the same model.
    try:
        from nnsight import NNsight

        wrapped = NNsight(model)

        def nnsight_stats() -> None:
            with torch.inference_mode(), wrapped.trace(ids, use_cache=False) as tracer:
                cache = tracer.cache()
            reduce_outputs([cache[key].output for key in cache.keys()])  # noqa: SIM118
            synchronize(device)

        nn_series = interleave({BARE: bare, NNSIGHT: nnsight_stats}, repeats, warmup, BARE)
        row["nnsight"] = nn_series[NNSIGHT]
        row[f"peak_gib {NNSIGHT}"] = peak_gib(device, nnsight_stats)
    except Exception as e:  # a peer failing is reported, not fatal
        row["nnsight_error"] = f"{type(e).__name__}: {last_line(str(e))}"
    return row
