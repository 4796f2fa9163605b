"""On CUDA: trace, compare, outliers and --device-map on a model as wide as opt-1.3b.

Run with ``pytest -m gpu`` (plain ``pytest`` hides CUDA, see conftest.py); every test
marked gpu skips itself where CUDA is absent. The others (the device-map budget,
computed on the meta device) run on the CPU in every plain run. Nothing is
downloaded: the checkpoint has random weights, built from an OPTConfig with the tiny
tokenizer.
"""

from __future__ import annotations

import functools
import inspect
import math
import socket
from pathlib import Path

import pytest
import torch

from conftest import PLANTED, json_of, plant_outlier
from optinspect import load
from optinspect.analyses.trace import iter_trace
from optinspect.model.names import layer_of, layer_root
from optinspect.model.placement import placement_name, placement_of

gpu = pytest.mark.gpu

DEVICE = "cuda"
#: opt-1.3b's widths; 4 of its 24 layers keep the run short (each layer is the same code).
OPT_1_3B_WIDTHS = {
    "vocab_size": 50272,
    "hidden_size": 2048,
    "word_embed_proj_dim": 2048,
    "ffn_dim": 8192,
    "num_attention_heads": 32,
    "max_position_embeddings": 2048,
    "num_hidden_layers": 4,
}
SENTENCES = [
    "The quick brown fox jumps over the lazy dog",
    "Hello",
    "A longer sentence, with some punctuation; it pads the others in its batch.",
]
STATS = ("mean", "std", "min", "max", "absmax", "rms")


@pytest.fixture(scope="module")
def wide(make_fixture_model) -> Path:
    return make_fixture_model("opt1.3b-wide", mutate=plant_outlier, **OPT_1_3B_WIDTHS)


def reference(x: torch.Tensor) -> dict[str, float]:
    """The statistics the obvious way, in float64 (all outputs here are finite)."""
    flat = x.detach().reshape(-1).to(torch.float64)
    return {
        "mean": float(flat.mean()),
        "std": float(flat.std(correction=0)),
        "min": float(flat.min()),
        "max": float(flat.max()),
        "absmax": float(flat.abs().max()),
        "rms": float(flat.square().mean().sqrt()),
        "zeros": float((flat == 0).sum()) / flat.numel(),
    }


@gpu
@pytest.mark.parametrize("quant", ["8bit", "4bit", "none"])
def test_statistics_equal_a_float64_reference_of_the_outputs(wide: Path, quant: str) -> None:
    loaded = load(str(wide), quant=quant, device=DEVICE)
    kept: dict[tuple[int, str, int], torch.Tensor] = {}

    def sink(index: int, name: str, call: int, tensor: torch.Tensor) -> None:
        kept[index, name, call] = tensor.detach().clone()

    results = list(iter_trace(loaded, SENTENCES, layers="0,-1", batch_size=3, sink=sink))
    assert len(results) == 3
    for result in results:
        assert result.device.startswith("cuda")
        assert len(result.modules) == 2 * 11
        for record in result.modules:
            assert record.device is not None and record.device.startswith("cuda"), record.name
            if quant == "none":
                assert record.dtype == "float16", record.name
            ref = reference(kept[result.index, record.name, record.call])
            got = record.stats.as_dict()
            assert (got["nan"], got["inf"]) == (0, 0), record.name
            # Exact counts over the same tensor: the fraction is one division in float64.
            assert got["zeros"] == pytest.approx(ref["zeros"], abs=1e-12), record.name
            # On CUDA the statistics are reduced in float64 from float32 reads of the
            # float16 outputs (exact), so they match the float64 reference to float64
            # rounding; the tolerance is test_stats.py's (rel 1e-5, 1e-6 of the absmax).
            for key in STATS:
                assert got[key] == pytest.approx(ref[key], rel=1e-5, abs=1e-6 * ref["absmax"]), (
                    record.name,
                    key,
                )


@gpu
@pytest.mark.parametrize("quant", ["8bit", "4bit", "none"])
def test_logits_are_identical_with_and_without_tracing(wide: Path, quant: str) -> None:
    from optinspect.engine.capture import capture

    loaded = load(str(wide), quant=quant, device=DEVICE)
    model = loaded.model
    names = [n for n, _ in model.named_modules() if n]
    ids = loaded.tokenizer(SENTENCES[0], return_tensors="pt")["input_ids"].to(DEVICE)
    with torch.inference_mode():
        bare = model(ids).logits.clone()
        with capture(model, names) as cap:
            traced = model(ids).logits.clone()
        again = model(ids).logits
    assert len(cap.collect()[0]) > 0
    # Same kernels, same shapes: hooks must not change a single bit.
    assert torch.equal(bare, traced)
    assert torch.equal(bare, again)


def run_json(cli, *args: str) -> dict:
    return json_of(cli, *args)


def compare_json(cli, wide: Path, quant: str, layer: str) -> dict:
    """``compare`` of the first sentence on CUDA: ``quant`` against unquantized float16."""
    args = ("--quant", quant, "--against", "none", "--layer", layer)
    return run_json(cli, "compare", SENTENCES[0], "--model", str(wide), "--device", DEVICE, *args)


@gpu
def test_compare_8bit_against_float16_on_cuda(cli, wide: Path) -> None:
    doc = compare_json(cli, wide, "8bit", "0")
    assert doc["device"].startswith("cuda")
    assert doc["setting"]["quant"] == "8bit" and doc["reference"]["quant"] == "none"
    assert len(doc["modules"]) == 11
    for module in doc["modules"]:
        assert module["status"] == "compared", module["name"]
        # LLM.int8 rounds to 1/127 of a row's absmax (0.8%); 5% is compare's own default.
        assert module["rel_error"] is not None and module["rel_error"] < 0.05, module["name"]
        assert module["cosine"] > 0.99, module["name"]
    fc1 = next(m for m in doc["modules"] if m["name"].endswith(".fc1"))
    assert fc1["type"] == "Linear8bitLt" and fc1["rel_error"] > 0.0


@gpu
def test_compare_a_setting_against_itself_on_cuda(cli, wide: Path) -> None:
    doc = compare_json(cli, wide, "none", "-1")
    # The same weights, kernels and shapes twice: identical outputs.
    assert all(m["rel_error"] == 0.0 and m["max_abs_diff"] == 0.0 for m in doc["modules"])


@gpu
@pytest.mark.parametrize("quant", ["8bit", "none"])
def test_outliers_find_the_planted_dimension_on_cuda(
    cli, wide: Path, tmp_path: Path, quant: str
) -> None:
    path = tmp_path / "s.txt"
    path.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    doc = run_json(
        cli, "outliers", "--file", str(path), "--model", str(wide), "--device", DEVICE,
        "--quant", quant, "-b", "2",
    )  # fmt: skip
    assert doc["device"].startswith("cuda") and doc["sentences"] == 3
    for module in doc["modules"]:
        role = module["name"].split(".", 4)[-1]
        if role in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "fc1"):
            assert [d["dim"] for d in module["dims"]] == [PLANTED], module["name"]
            assert module["tokens_affected"] == module["tokens"] == doc["tokens"]
    assert [r["dim"] for r in doc["recurring"]] == [PLANTED]


#: The split the offload test means: decoder layers 0-1 on the GPU, 2-3 on the CPU.
GPU_LAYERS = 2
MiB = 2**20


@functools.cache
def meta_model() -> torch.nn.Module:
    """The fixture's model on the meta device, in float16 as the offload test loads it."""
    from transformers import OPTConfig, OPTForCausalLM

    with torch.device("meta"):
        return OPTForCausalLM(OPTConfig(**OPT_1_3B_WIDTHS)).to(torch.float16)


def layer_homes(gpu_mib: int) -> dict[int, str]:
    """Where transformers' own device-map computation puts each decoder layer of the
    float16 fixture for ``--max-memory cuda:0={gpu_mib}MiB,cpu=16GiB``: ``cuda:0`` or ``cpu``.

    The computation needs no GPU: it reads the sizes of a model built on the meta
    device, and a cap given for GPU 0 is taken as it is.
    """
    model = meta_model()
    memory: dict[int | str, int] = {0: gpu_mib * MiB, "cpu": 16 * 1024 * MiB}
    try:
        from transformers.integrations.accelerate import _get_device_map
    except ImportError:  # a transformers without it: accelerate's computation, as it calls it
        from accelerate.utils import get_balanced_memory, infer_auto_device_map

        splits = model._no_split_modules
        balanced = get_balanced_memory(model, memory, no_split_module_classes=splits)
        device_map = infer_auto_device_map(model, balanced, no_split_module_classes=splits)
    else:
        # Its arguments changed between transformers releases: give those it takes.
        offered = {
            "model": model,
            "device_map": "auto",
            "max_memory": memory,
            "hf_quantizer": None,
            "dtype": torch.float16,
        }
        taken = inspect.signature(_get_device_map).parameters
        device_map = _get_device_map(**{k: v for k, v in offered.items() if k in taken})
    layers = int(OPT_1_3B_WIDTHS["num_hidden_layers"])
    return {i: placement_name(placement_of(device_map, layer_root(i))) for i in range(layers)}


def offload_budget(gpu_layers: int) -> int:
    """The GPU cap in MiB, a multiple of 10, in the middle of the caps at which exactly
    decoder layers ``0 .. gpu_layers - 1`` stay on the GPU and the rest go to the CPU."""
    layers = int(OPT_1_3B_WIDTHS["num_hidden_layers"])
    meant = {i: "cuda:0" if i < gpu_layers else "cpu" for i in range(layers)}
    fitting = [mib for mib in range(200, 1200, 10) if layer_homes(mib) == meant]
    assert fitting, f"no GPU cap from 200 to 1190 MiB puts layers 0-{gpu_layers - 1} on the GPU"
    return fitting[len(fitting) // 2]


def test_the_offload_budget_keeps_the_layers_meant_on_the_gpu() -> None:
    # 300 MiB, the budget this test first had: the token embedding (206 MB) and the
    # reserve for the largest layer (101 MB) fill it, and every decoder layer went to
    # the CPU, so "some weight on the GPU" could never hold.
    assert set(layer_homes(300).values()) == {"cpu"}
    budget = offload_budget(GPU_LAYERS)
    assert layer_homes(budget) == {0: "cuda:0", 1: "cuda:0", 2: "cpu", 3: "cpu"}
    assert 300 < budget < 1200


@gpu
def test_device_map_with_cpu_offload_gives_the_plain_statistics(cli, wide: Path) -> None:
    base = [
        "trace",
        SENTENCES[0],
        "--model",
        str(wide),
        "-q",
        "none",
        "--dtype",
        "float16",
        "--layer",
        "all",
    ]
    plain = run_json(cli, *base, "--device", DEVICE)
    # About 0.6 GB of float16 weights; the cap comes from transformers' own device-map
    # computation (layer_homes) so that layers 0-1 stay on the GPU and 2-3 are offloaded.
    budget = offload_budget(GPU_LAYERS)
    memory = f"cuda:0={budget}MiB,cpu=16GiB"
    mapped = run_json(cli, *base, "--device-map", "auto", "--max-memory", memory)
    homes = {m["name"]: m["weight_device"] for m in mapped["modules"] if m["weight_dtype"]}
    meant = {name: "cuda:0" if (layer_of(name) or 0) < GPU_LAYERS else "cpu" for name in homes}
    assert homes and homes == meant, memory
    assert [m["name"] for m in mapped["modules"]] == [m["name"] for m in plain["modules"]]
    for a, b in zip(plain["modules"], mapped["modules"], strict=True):
        assert a["shape"] == b["shape"], a["name"]
        scale = a["stats"]["absmax"]
        # Offloaded weights are streamed to the GPU and run there, usually bit for bit
        # the same. Should a module run on the CPU instead, both sides still accumulate
        # in float32 and round to float16 once per matmul (2^-11 relative), over 4
        # layers: 1e-2 of the output's absmax bounds that.
        for key in STATS:
            assert b["stats"][key] == pytest.approx(a["stats"][key], abs=1e-2 * scale), (
                a["name"],
                key,
            )
        assert (b["stats"]["nan"], b["stats"]["inf"]) == (0, 0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@gpu
def test_nccl_takes_the_rank_gpu_and_the_timeout_in_one_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two NCCL ranks cannot share one GPU, so the many-rank path is not run on a machine
    # with one; a single rank still checks that this torch's NCCL takes the arguments
    # process_group gives it (device_id, timeout) and runs a collective with them.
    import torch.distributed as dist

    from optinspect.engine.distributed import Ranks, group_options

    if not dist.is_available() or not dist.is_nccl_available():
        pytest.skip("this torch was built without NCCL")
    for name, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}.items():
        monkeypatch.setenv(name, value)
    options = group_options(Ranks(rank=0, world=1, local_rank=0), "nccl")
    dist.init_process_group(**options, rank=0, world_size=1)
    try:
        total = torch.ones(3, device="cuda:0")
        dist.all_reduce(total)
        assert total.tolist() == [1.0, 1.0, 1.0]
    finally:
        dist.destroy_process_group()


@gpu
def test_report_on_cuda_bins_every_output_between_its_extremes(cli, wide: Path) -> None:
    # The histograms are binned on the device in the one pass; the counts must still add
    # up to each output's elements (float16 under 8-bit: no NaN or Inf in this model).
    args = ("--model", str(wide), "--device", DEVICE, "--quant", "8bit")
    doc = run_json(cli, "report", SENTENCES[0], *args)
    assert doc["device"].startswith("cuda")
    modules = {m["name"]: m for m in doc["trace"]["modules"] if m["call"] == 0}
    assert set(doc["histograms"]) == set(modules)
    for name, histogram in doc["histograms"].items():
        record = modules[name]
        assert sum(histogram["counts"]) == math.prod(record["shape"]), name
        assert (histogram["lo"], histogram["hi"]) == (
            record["stats"]["min"],
            record["stats"]["max"],
        ), name
