"""The CUDA section: runs only where ``torch.cuda.is_available()``.

UNTESTED: this code was written on a machine without a GPU and has never run.
Expect to fix small things the first time it does; the report says so.
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


def make_checkpoint(shape: dict[str, int]) -> Path:
    """A random-weight float16 checkpoint with the tiny tokenizer, in a temporary folder."""
    import torch
    from transformers import OPTForCausalLM

    from optinspect.model.spec import RANDOM_WEIGHTS_KEY, tiny_path

    config = opt_config(shape)
    setattr(config, RANDOM_WEIGHTS_KEY, True)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = OPTForCausalLM(config).half().eval()
    folder = Path(tempfile.mkdtemp(prefix="optinspect-bench-cuda-"))
    model.save_pretrained(folder)
    del model
    torch.cuda.empty_cache()
    for name in TOKENIZER_FILES:
        shutil.copy(tiny_path() / name, folder / name)
    return folder


def cuda_section(repeats: int, warmup: int, quick: bool, tokens: int = 256) -> dict[str, Any]:
    """Load time, forward, trace ratio, peak GPU memory and nnsight, per quantization."""
    import torch

    from optinspect.model.loading import load_model

    shape = OPT_SMALL if quick else OPT_1_3B
    folder = make_checkpoint(shape)
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0),
        "model": "opt-1.3b shape" if not quick else "small",
        "tokens": tokens,
        "rows": [],
    }
    try:
        for quant in ("8bit", "none"):
            report["rows"].append(_one_quant(folder, quant, repeats, warmup, tokens, load_model))
            torch.cuda.empty_cache()  # that quantization's model went with _one_quant's frame
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return report


def _one_quant(
    folder: Path, quant: str, repeats: int, warmup: int, tokens: int, load_model: Any
) -> dict[str, Any]:
    import torch

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    loaded = load_model(str(folder), quant=quant, device="cuda", dtype="float16")
    torch.cuda.synchronize()
    row: dict[str, Any] = {"quant": quant, "load_s": time.perf_counter() - start}
    model = loaded.model
    ids = token_ids(tokens).to("cuda")
    names = every_module(model)
    traced_once = optinspect_runner(model, ids, names)

    def bare() -> None:
        with torch.inference_mode():
            model(input_ids=ids, use_cache=False)
        torch.cuda.synchronize()

    def traced() -> None:
        traced_once()
        torch.cuda.synchronize()

    eager_once = eager_statistics(traced_once)

    def traced_eager() -> None:
        eager_once()
        torch.cuda.synchronize()

    from optinspect.engine import fused_triton

    runs = {BARE: bare, OPTINSPECT: traced, EAGER_STATS: traced_eager}
    series = interleave(runs, repeats, warmup, baseline=BARE)
    row["series"] = series
    # The Triton kernel falls back to eager (with one warning) if it cannot run here.
    if fused_triton._broken is not None:
        row["triton"] = f"failed, eager used: {fused_triton._broken}"
    elif fused_triton._kernel(False) is None:
        row["triton"] = "Triton not installed, eager used"
    else:
        row["triton"] = "in use"
    for label, fn in ((BARE, bare), (OPTINSPECT, traced)):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        fn()
        row[f"peak_gib {label}"] = torch.cuda.max_memory_allocated() / 1024**3
    # nnsight wraps the model it is given, so it goes last, on the same model.
    try:
        from nnsight import NNsight

        wrapped = NNsight(model)

        def nnsight_stats() -> None:
            with torch.inference_mode(), wrapped.trace(ids, use_cache=False) as tracer:
                cache = tracer.cache()
            reduce_outputs([cache[key].output for key in cache.keys()])  # noqa: SIM118
            torch.cuda.synchronize()

        nn_series = interleave({BARE: bare, NNSIGHT: nnsight_stats}, repeats, warmup, BARE)
        row["nnsight"] = nn_series[NNSIGHT]
        torch.cuda.reset_peak_memory_stats()
        nnsight_stats()
        row[f"peak_gib {NNSIGHT}"] = torch.cuda.max_memory_allocated() / 1024**3
    except Exception as e:  # a peer failing is reported, not fatal
        row["nnsight_error"] = f"{type(e).__name__}: {last_line(str(e))}"
    return row
