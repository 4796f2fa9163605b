"""In-process measurements: hook overhead, peers, batch throughput, peak memory of one call.

Every runner is a zero-argument callable doing one complete job (hook, forward,
statistics on the host), so the same runners serve the timings and the memory
worker.
"""

from __future__ import annotations

import copy
import gc
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench_models import pad_batch, sentences, token_ids, wrap_loaded
from bench_util import (
    Series,
    interleave,
    last_line,
    peak_rss_mib,
    reset_peak_rss,
    rss_mib,
    version_of,
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

#: Tool names the memory worker accepts, and the runner each measures.
MEMORY_TOOLS = {
    "bare": BARE,
    "optinspect": OPTINSPECT,
    "naive": NAIVE,
    "nnsight": NNSIGHT,
    "transformer_lens": TL,
}


@dataclass
class PeerSetup:
    runners: dict[str, Runner] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)  # tool -> what it is / why it is missing
    counts: dict[str, int] = field(default_factory=dict)  # label -> tensors summarised


def every_module(model: Any) -> list[str]:
    """The names optinspect hooks for ``--filter '*'``: every named submodule."""
    from optinspect.engine.selection import select_names

    names = (n for n, _ in model.named_modules())
    return select_names(names, int(model.config.num_hidden_layers), None, ("*",))


def reduce_outputs(outputs: list[Any]) -> list[Any]:
    """The statistics optinspect computes, over tensors another tool saved; one host transfer."""
    from optinspect.engine.capture import main_tensor
    from optinspect.engine.stats import finalize_stats, summarize_tensor

    vectors = []
    for output in outputs:
        tensor = main_tensor(output)
        if tensor is not None and tensor.is_floating_point():
            vectors.append(summarize_tensor(tensor))
    return finalize_stats(vectors)


# -- runners -------------------------------------------------------------------
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

    mask = torch.ones_like(ids)
    texts = ("",) * ids.shape[0]
    batch = Batch(texts, ((),) * ids.shape[0], ids, mask, BatchLayout.from_mask(mask.cpu()))

    def run() -> object:
        with capture(model, names, stats=stats) as cap:
            forward(model, batch, [cap])
            return cap.collect()

    return run


def eager_statistics(run: Runner) -> Runner:
    """``run`` with the eager torch statistics forced, for the old-against-new rows."""

    def wrapped() -> object:
        previous = os.environ.get("OPTINSPECT_STATS")
        os.environ["OPTINSPECT_STATS"] = "eager"
        try:
            return run()
        finally:
            if previous is None:
                del os.environ["OPTINSPECT_STATS"]
            else:
                os.environ["OPTINSPECT_STATS"] = previous

    return wrapped


def statistics_path() -> str:
    """Which statistics the OPTINSPECT rows ran on the CPU: the compiled kernel or eager torch."""
    from optinspect.engine import fused

    if fused.available():
        return f"the one-pass compiled kernel (`{fused.library_path().name}`)"  # type: ignore[union-attr]
    return "the eager torch statistics (the compiled kernel is not built or is switched off)"


def naive_runner(model: Any, ids: Any, names: list[str]) -> Runner:
    """What a first attempt looks like: a forward hook per module, nine ``.item()`` each."""
    import torch

    from optinspect.engine.capture import main_tensor

    modules = dict(model.named_modules())

    def run() -> object:
        rows: list[tuple[float, ...]] = []

        def hook(module: Any, args: Any, output: Any) -> None:
            tensor = main_tensor(output)
            if tensor is None:
                return
            x = tensor.detach().float()
            rows.append(
                (
                    x.mean().item(),
                    x.std(correction=0).item(),
                    x.min().item(),
                    x.max().item(),
                    x.abs().max().item(),
                    x.pow(2).mean().sqrt().item(),
                    (x == 0).float().mean().item(),
                    torch.isnan(x).sum().item(),
                    torch.isinf(x).sum().item(),
                )
            )

        handles = [modules[name].register_forward_hook(hook) for name in names]
        try:
            with torch.inference_mode():
                model(input_ids=ids, use_cache=False)
        finally:
            for handle in handles:
                handle.remove()
        return rows

    return run


def nnsight_runners(model: Any, ids: Any, setup: PeerSetup) -> None:
    """nnsight's ``tracer.cache()`` on its own copy of the model (nnsight wraps what it gets)."""
    import torch
    from nnsight import NNsight

    wrapped = NNsight(copy.deepcopy(model))

    def cached() -> list[Any]:
        with torch.inference_mode(), wrapped.trace(ids, use_cache=False) as tracer:
            cache = tracer.cache()
        return [cache[key].output for key in cache.keys()]  # noqa: SIM118 (a CacheView)

    outputs = cached()
    setup.counts[NNSIGHT] = len(reduce_outputs(outputs))
    setup.runners[NNSIGHT_SAVE] = cached
    setup.runners[NNSIGHT] = lambda: reduce_outputs(cached())
    setup.notes["nnsight"] = f"nnsight {version_of('nnsight')}: `NNsight(model)`, `tracer.cache()`"


def transformer_lens_runners(model: Any, tokenizer: Any, ids: Any, setup: PeerSetup) -> None:
    """TransformerLens ``run_with_cache``: a TransformerBridge over a copy of the same HF model
    (TransformerLens >= 4, where HookedTransformer is gone), else a HookedTransformer of the
    same shape with its own random weights (TransformerLens < 4)."""
    import torch
    import transformer_lens

    version = version_of("transformer_lens")
    if int(version.split(".")[0]) >= 4:
        # The bridge reads the config from a folder, once, while it boots.
        with tempfile.TemporaryDirectory(prefix="optinspect-bench-tl-") as folder:
            model.config.save_pretrained(folder)
            bridge = transformer_lens.TransformerBridge.boot_transformers(
                folder, hf_model=copy.deepcopy(model), tokenizer=tokenizer, device="cpu"
            )
        bridge.eval()
        tl_model: Any = bridge
        how = "`TransformerBridge.boot_transformers(config folder, hf_model=copy of the model)`"
    else:
        config = model.config
        tl_config = transformer_lens.HookedTransformerConfig(
            d_model=config.hidden_size,
            n_layers=config.num_hidden_layers,
            n_heads=config.num_attention_heads,
            d_head=config.hidden_size // config.num_attention_heads,
            d_mlp=config.ffn_dim,
            d_vocab=config.vocab_size,
            n_ctx=config.max_position_embeddings,
            act_fn="relu",
            normalization_type="LN",
            positional_embedding_type="standard",
            device="cpu",
            seed=0,
        )
        tl_model = transformer_lens.HookedTransformer(tl_config)
        tl_model.eval()
        how = "`HookedTransformer(HookedTransformerConfig(same shape))`, its own random weights"

    def forward() -> object:
        with torch.inference_mode():
            return tl_model(ids)

    def cached() -> list[Any]:
        with torch.inference_mode():
            _, cache = tl_model.run_with_cache(ids)
        return list(cache.values())

    setup.counts[TL] = len(reduce_outputs(cached()))
    setup.runners[TL_FORWARD] = forward
    setup.runners[TL_SAVE] = cached
    setup.runners[TL] = lambda: reduce_outputs(cached())
    setup.notes["transformer_lens"] = f"TransformerLens {version}: {how}, `run_with_cache`"


def peer_setup(model: Any, tokenizer: Any, ids: Any, only: str | None = None) -> PeerSetup:
    """Set up each peer that imports and runs; a peer that fails leaves its exact error."""
    setup = PeerSetup()
    builders: dict[str, Callable[[PeerSetup], None]] = {
        "nnsight": lambda part: nnsight_runners(model, ids, part),
        "transformer_lens": lambda part: transformer_lens_runners(model, tokenizer, ids, part),
    }
    for tool, build in builders.items():
        if only is not None and tool != only:
            continue
        part = PeerSetup()
        try:
            build(part)
        except Exception as e:  # a third-party tool that fails is a finding, not a crash
            setup.notes[tool] = f"did not run: `{type(e).__name__}: {last_line(str(e))}`"
            continue
        setup.runners.update(part.runners)
        setup.notes.update(part.notes)
        setup.counts.update(part.counts)
    return setup


# -- sections ----------------------------------------------------------------
def hook_overhead(
    model: Any, token_counts: list[int], repeats: int, warmup: int, threads: int | None = None
) -> dict[int, dict[str, Series]]:
    """Bare forward against optinspect (statistics on and off) and the naive baseline.

    Where the compiled statistics kernel is in use, optinspect also runs with the
    eager torch statistics, in the same rounds. ``threads`` sets torch's
    intra-op threads for this section only.
    """
    import torch

    from optinspect.engine import fused

    names = every_module(model)
    results = {}
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        for tokens in token_counts:
            ids = token_ids(tokens)
            runs = {
                BARE: bare_runner(model, ids),
                OPTINSPECT: optinspect_runner(model, ids, names),
                HOOKS_ONLY: optinspect_runner(model, ids, names, stats=False),
                NAIVE: naive_runner(model, ids, names),
            }
            if fused.available():
                runs[EAGER_STATS] = eager_statistics(optinspect_runner(model, ids, names))
            results[tokens] = interleave(runs, repeats, warmup, baseline=BARE)
    finally:
        torch.set_num_threads(before)
    return results


def peers(
    model: Any, tokenizer: Any, token_counts: list[int], repeats: int, warmup: int
) -> tuple[dict[int, dict[str, Series]], PeerSetup]:
    """Peers against the bare forward and optinspect, interleaved in one process."""
    names = every_module(model)
    results = {}
    setup = PeerSetup()
    for tokens in token_counts:
        ids = token_ids(tokens)
        setup = peer_setup(model, tokenizer, ids)
        runs = {
            BARE: bare_runner(model, ids),
            OPTINSPECT: optinspect_runner(model, ids, names),
            **setup.runners,
        }
        results[tokens] = interleave(runs, repeats, warmup, baseline=BARE)
        records = runs[OPTINSPECT]()[0]  # one sentence: its records, in execution order
        setup.counts[OPTINSPECT] = sum(1 for r in records if r.stats is not None)
        del runs
        gc.collect()
    return results, setup


def batch_throughput(
    model: Any, tokenizer: Any, count: int, tokens: int, batch: int, repeats: int, warmup: int
) -> tuple[dict[str, Series], dict[str, Any]]:
    """Sentences per second: optinspect's ``iter_trace`` against bare batched forwards."""
    import torch

    from optinspect.analyses.trace import iter_trace

    loaded = wrap_loaded(model, tokenizer, "random-weight opt-125m shape")
    texts = sentences(tokenizer, count, tokens)
    batches = [pad_batch(tokenizer, texts[i : i + batch]) for i in range(0, count, batch)]

    def bare() -> None:
        for ids, mask, padded in batches:
            with torch.inference_mode():
                model(input_ids=ids, attention_mask=mask if padded else None, use_cache=False)

    def traced() -> None:
        for _ in iter_trace(loaded, texts, filters=("*",), batch_size=batch):
            pass

    lengths = [len(tokenizer(t)["input_ids"]) for t in texts]
    facts = {
        "sentences": count,
        "batch": batch,
        "tokens_min": min(lengths),
        "tokens_max": max(lengths),
        "tokens_mean": sum(lengths) / len(lengths),
        "modules": len(every_module(model)),
    }
    series = interleave({BARE: bare, OPTINSPECT: traced}, repeats, warmup, baseline=BARE)
    return series, facts


# -- memory worker ---------------------------------------------------------------
def memory_worker(tool: str, shape: dict[str, int], tokens: int) -> dict[str, Any]:
    """Peak RSS of one call of ``tool``'s runner above the resident baseline, in MiB.

    Run in a fresh process (``run.py --worker-memory``) with glibc's mmap threshold
    fixed low, so freed tensors go back to the OS and RSS follows live memory.
    The runner runs once untimed first (lazy set-up), then is measured.
    """
    from bench_models import build_model, tiny_tokenizer

    model = build_model(shape)
    ids = token_ids(tokens)
    label = MEMORY_TOOLS[tool]
    if tool in ("nnsight", "transformer_lens"):
        setup = peer_setup(model, tiny_tokenizer(), ids, only=tool)
        if label not in setup.runners:
            return {"tool": tool, "error": setup.notes.get(tool, "did not run")}
        runner = setup.runners[label]
    elif tool == "bare":
        runner = bare_runner(model, ids)
    elif tool == "naive":
        runner = naive_runner(model, ids, every_module(model))
    else:
        runner = optinspect_runner(model, ids, every_module(model))
    bare_runner(model, ids)()
    runner()
    gc.collect()
    baseline = rss_mib()
    if not reset_peak_rss():
        return {"tool": tool, "error": "cannot reset the peak RSS (/proc/self/clear_refs)"}
    result = runner()
    peak = peak_rss_mib()
    del result
    return {"tool": tool, "baseline_mib": baseline, "peak_mib": peak, "extra_mib": peak - baseline}


def print_worker_result(result: dict[str, Any]) -> None:
    print(json.dumps(result))
