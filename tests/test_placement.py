"""model/placement.py: --device-map, --max-memory, offloaded weights and where inputs go.

The offload tests run every command on the tiny model with its token embedding offloaded
to disk and compare with a plain CPU run. Offloading moves weights, not arithmetic: the
same float32 kernels run on the same CPU, so the numbers agree to float32 rounding (below
1e-5 relative; measured: equal) and token ids, predictions and argmaxes agree exactly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import assert_same
from optinspect.errors import UsageError
from optinspect.model.names import TOKEN_EMBEDDINGS
from optinspect.model.placement import input_device, parse_max_memory, placement_of

SENTENCE = "The quick brown fox jumps over the lazy dog"
USAGE = "use DEVICE=SIZE pairs like 'cuda:0=10GiB,cpu=30GiB'"

#: Below the size of any tiny module, so sequential placement puts everything, the token
#: embedding included, on disk ({"": "disk"}); 1KB is the smallest size accelerate reads.
EMBED_ON_DISK = "cpu=1KB"


# --- parse_max_memory -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("cuda:0=10GiB,cpu=30GiB", {0: 10 * 2**30, "cpu": 30 * 2**30}),
        ("0=1GB", {0: 10**9}),
        ("cuda:1=500MiB", {1: 500 * 2**20}),
        ("disk=1TB", {"disk": 10**12}),
        (" cuda:0 = 10GiB , cpu = 2.5GB ", {0: 10 * 2**30, "cpu": 2_500_000_000}),
        ("cpu=600KB", {"cpu": 600_000}),
        # Bytes, never bits: a lowercase "kb" is the same as "KB" (accelerate would read
        # 600kb as 75,000 bytes).
        ("cpu=600kb", {"cpu": 600_000}),
        ("cpu=2000000B", {"cpu": 2_000_000}),
    ],
)
def test_parse_max_memory_reads_device_size_pairs(spec: str, expected: dict) -> None:
    assert parse_max_memory(spec) == expected


@pytest.mark.parametrize(
    "spec",
    ["cuda:0=lots", "tpu=1GiB", "cpu", "cpu=", "=1GiB", "cpu=1GiB,", "gpu:0=1GiB", "cpu=-1GB",
     "cpu=1 GiB extra", ""],
)  # fmt: skip
def test_parse_max_memory_refuses_anything_else(spec: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_max_memory(spec)
    assert str(info.value) == f"cannot read --max-memory {spec!r}: {USAGE}"
    assert info.value.exit_code == 2


# Every size parse_max_memory accepts reaches accelerate as a byte count it reads.
@pytest.mark.parametrize("size", ["1TB", "1TiB", "2000000B"])
def test_every_size_parse_max_memory_accepts_can_be_loaded(cli, tmp_path: Path, size: str) -> None:
    result = cli(
        "trace", "hi", "--model", "tiny", "-q", "none", "--layer", "0", "-f", "json",
        "--device-map", "sequential", "--max-memory", f"cpu={size}",
        "--offload-dir", str(tmp_path),
    )  # fmt: skip
    assert "cannot load the weights" not in result.err
    assert result.code in (0, 2), result.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--max-memory", "cuda:0=lots"],
            "cannot read --max-memory 'cuda:0=lots': use DEVICE=SIZE pairs like "
            "'cuda:0=10GiB,cpu=30GiB'",
        ),
        (
            ["--max-memory", "tpu=1GiB"],
            "cannot read --max-memory 'tpu=1GiB': use DEVICE=SIZE pairs like "
            "'cuda:0=10GiB,cpu=30GiB'",
        ),
        (
            ["--device-map", "diagonal"],
            "unknown device map 'diagonal': use auto, balanced, sequential",
        ),
    ],
)
def test_placement_errors(cli, args: list[str], message: str) -> None:
    result = cli("trace", "hi", "--model", "tiny", "-q", "none", *args)
    assert (result.code, result.err) == (2, f"Error: {message}\n")


# --- placement_of and input_device ------------------------------------------------------


def test_placement_of_takes_the_longest_covering_prefix() -> None:
    device_map = {"": "disk", "model.decoder": 0, "model.decoder.embed_tokens": "cpu"}
    assert placement_of(device_map, TOKEN_EMBEDDINGS) == "cpu"
    assert placement_of(device_map, "model.decoder.layers.0.fc1") == 0
    assert placement_of(device_map, "lm_head") == "disk"
    # A prefix covers whole names only: layers.1 does not cover layers.10.
    assert placement_of({"model.decoder.layers.1": 0}, "model.decoder.layers.10") is None
    assert placement_of(None, "lm_head") is None


@pytest.fixture
def meta_model() -> torch.nn.Module:
    from optinspect.model.spec import build_meta_model, read_config, resolve_source

    return build_meta_model(read_config(resolve_source("tiny")))


def test_input_device_of_a_normal_model_is_its_embedding_weights(load_tiny) -> None:
    model = load_tiny("none").model
    assert input_device(model) == model.get_input_embeddings().weight.device == torch.device("cpu")


@pytest.mark.parametrize(
    ("where", "expected"),
    [("cpu", "cpu"), ("disk", "cpu"), (0, "cuda:0"), ("cuda:1", "cuda:1")],
)
def test_input_device_of_an_offloaded_embedding(
    meta_model: torch.nn.Module, where: object, expected: str
) -> None:
    # accelerate leaves an offloaded weight on the meta device and runs the module on the
    # CPU, loading the weight there (from RAM or disk) for each call.
    assert meta_model.get_input_embeddings().weight.device.type == "meta"
    meta_model.hf_device_map = {"": "cpu", TOKEN_EMBEDDINGS: where}
    assert input_device(meta_model) == torch.device(expected)


def test_offloaded_embedding_runs_on_the_maps_first_gpu(meta_model: torch.nn.Module) -> None:
    # accelerate's dispatch_model runs offloaded modules on its main device, the first
    # GPU of the map; the ids must go there, not to the CPU.
    meta_model.hf_device_map = {TOKEN_EMBEDDINGS: "disk", "model.decoder.layers": 1, "": "cpu"}
    assert input_device(meta_model) == torch.device("cuda:1")


def test_device_names_are_case_insensitive() -> None:
    from optinspect.model.placement import resolve_device

    assert resolve_device("CPU") == "cpu"
    assert parse_max_memory("CPU=1GB,Disk=2GB") == {"cpu": 10**9, "disk": 2 * 10**9}


def test_input_device_of_a_meta_model_without_a_map_is_meta(meta_model: torch.nn.Module) -> None:
    assert input_device(meta_model) == torch.device("meta")


# --- offloaded models give the plain results --------------------------------------------


def offload_args(folder: Path) -> list[str]:
    placement = ["--device-map", "sequential", "--max-memory", EMBED_ON_DISK]
    return [*placement, "--offload-dir", str(folder)]


def load_offloaded(model: str, folder: Path, **kwargs: Any):
    from optinspect.model.loading import load_model

    loaded = load_model(
        model, quant="none", device_map="sequential", max_memory=EMBED_ON_DISK,
        offload_dir=folder, **kwargs,
    )  # fmt: skip
    # What the test is about: the token embedding itself sits on disk, so its weight is
    # on meta and the runner must still send the ids to the CPU.
    assert placement_of(loaded.model.hf_device_map, TOKEN_EMBEDDINGS) == "disk"
    assert loaded.model.get_input_embeddings().weight.device.type == "meta"
    assert input_device(loaded.model) == torch.device("cpu")
    return loaded


def without(doc: dict, *keys: str) -> dict:
    """``doc`` less the keys that name the placement, which differ by design."""
    return {k: v for k, v in doc.items() if k not in keys}


def run_both(cli, tmp_path: Path, *args: str) -> tuple[dict, dict]:
    plain = cli(*args, "-q", "none", "-f", "json")
    assert plain.code == 0, plain.err
    offloaded = cli(*args, "-q", "none", "-f", "json", *offload_args(tmp_path / "offload"))
    assert offloaded.code == 0, offloaded.err
    a, b = json.loads(plain.out), json.loads(offloaded.out)
    assert (a["device"], b["device"]) == ("cpu", "map:sequential")
    return a, b


def test_the_offload_options_put_the_token_embedding_on_disk(tmp_path: Path) -> None:
    load_offloaded("tiny", tmp_path)


def test_disk_offload_records_every_module_with_the_same_statistics(cli, tmp_path: Path) -> None:
    base = ["trace", "The quick brown fox", "--model", "tiny", "-q", "none", "-f", "json"]
    plain = json.loads(cli(*base, "--layer", "all").out)
    result = cli(
        *base, "--layer", "all", "--device-map", "sequential", "--max-memory", "cpu=600KB",
        "--offload-dir", str(tmp_path / "offload"),
    )  # fmt: skip
    assert result.code == 0, result.err
    offloaded = json.loads(result.out)
    assert offloaded["device"] == "map:sequential"
    assert [m["name"] for m in offloaded["modules"]] == [m["name"] for m in plain["modules"]]
    homes = {m["weight_device"] for m in offloaded["modules"] if m["weight_dtype"]}
    assert homes == {"cpu", "disk"}
    fc1 = next(m for m in offloaded["modules"] if m["name"] == "model.decoder.layers.3.fc1")
    assert fc1["weight_device"] == "disk" and fc1["device"] == "cpu"
    for a, b in zip(plain["modules"], offloaded["modules"], strict=True):
        assert a["shape"] == b["shape"]
        for key, value in a["stats"].items():
            assert b["stats"][key] == pytest.approx(value, rel=1e-6, abs=1e-7), (a["name"], key)


def test_trace_with_the_embedding_on_disk(cli, tmp_path: Path) -> None:
    plain, offloaded = run_both(cli, tmp_path, "trace", SENTENCE, "--model", "tiny", "-l", "all")
    embed = next(m for m in offloaded["modules"] if m["name"] == "model.decoder.layers.0")
    assert embed["device"] == "cpu"
    placement = ("device", "weight_device")
    assert len(plain["modules"]) == len(offloaded["modules"]) == 4 * 11
    for a, b in zip(plain["modules"], offloaded["modules"], strict=True):
        assert_same(without(a, *placement), without(b, *placement), a["name"])
    assert_same(without(plain, "device", "modules"), without(offloaded, "device", "modules"))


def test_lens_with_the_embedding_on_disk(cli, tmp_path: Path) -> None:
    plain, offloaded = run_both(cli, tmp_path, "lens", SENTENCE, "--model", "tiny", "-k", "3")
    assert len(plain["layers"]) == 4 and len(plain["output"]) == 10
    assert_same(without(plain, "device"), without(offloaded, "device"))


def test_attention_with_the_embedding_on_disk(cli, tmp_path: Path) -> None:
    plain, offloaded = run_both(cli, tmp_path, "attention", SENTENCE, "--model", "tiny", "-l", "1")
    assert len(plain["weights"]) == 10 and len(plain["heads"]) == 4
    assert_same(without(plain, "device"), without(offloaded, "device"))


def test_compare_with_the_embedding_on_disk(cli, tmp_path: Path) -> None:
    # Two settings, so the reference and the compared model both load offloaded.
    plain, offloaded = run_both(
        cli, tmp_path, "compare", SENTENCE, "--model", "tiny", "--dtype", "float32",
        "--against", "none", "--against-dtype", "bfloat16", "-l", "0",
    )  # fmt: skip
    assert plain["reference"] == {"quant": "none", "dtype": "bfloat16"}
    assert any(m["rel_error"] > 0 for m in plain["modules"])  # not a model against itself
    assert_same(without(plain, "device"), without(offloaded, "device"))


@pytest.fixture(scope="module")
def planted(make_fixture_model) -> Path:
    def plant(model) -> None:
        # A LayerNorm bias of 20 at dimension 5: every q/k/v and fc1 input carries it.
        for layer in model.model.decoder.layers:
            layer.self_attn_layer_norm.bias[5] = 20.0
            layer.final_layer_norm.bias[5] = 20.0

    return make_fixture_model("planted-offload", mutate=plant)


def test_outliers_with_the_embedding_on_disk(cli, tmp_path: Path, planted: Path) -> None:
    plain, offloaded = run_both(cli, tmp_path, "outliers", SENTENCE, "--model", str(planted))
    assert [r["dim"] for r in plain["recurring"]] == [5]  # there is something to find
    assert_same(without(plain, "device"), without(offloaded, "device"))


def test_python_api_with_the_embedding_on_disk(load_tiny, tmp_path: Path, planted: Path) -> None:
    from optinspect import trace
    from optinspect.analyses.attention import compute_attention
    from optinspect.analyses.compare import Setting, compare_settings
    from optinspect.analyses.lens import compute_lens, iter_lens
    from optinspect.analyses.outliers import find_outliers
    from optinspect.model.loading import load_model

    plain = load_tiny("none")
    offloaded = load_offloaded("tiny", tmp_path / "lm")

    def same(a, b) -> None:
        assert_same(without(a.as_dict(), "device"), without(b.as_dict(), "device"))

    texts = [SENTENCE, "Hello"]  # a padded batch: the mask goes to the CPU too
    traced = trace(plain, texts, layers="all"), trace(offloaded, texts, layers="all")
    for a, b in zip(*traced, strict=True):
        assert [m.name for m in a.modules] == [m.name for m in b.modules]
        assert [m.shape for m in a.modules] == [m.shape for m in b.modules]
        for x, y in zip(a.modules, b.modules, strict=True):
            assert_same(x.stats.as_dict(), y.stats.as_dict(), x.name)
    same(compute_lens(plain, SENTENCE, top_k=3), compute_lens(offloaded, SENTENCE, top_k=3))
    lenses = list(iter_lens(plain, texts)), list(iter_lens(offloaded, texts))
    for a, b in zip(*lenses, strict=True):
        same(a, b)

    eager = load_model("tiny", quant="none", device="cpu", attn_implementation="eager")
    eager_offloaded = load_offloaded("tiny", tmp_path / "eager", attn_implementation="eager")
    same(
        compute_attention(eager, SENTENCE, layer=2),
        compute_attention(eager_offloaded, SENTENCE, layer=2),
    )

    def loader(folder: Path | None):
        def load(quant: str, dtype: str):
            if folder is None:
                return load_model("tiny", quant=quant, dtype=dtype, device="cpu")
            return load_offloaded("tiny", folder / dtype, dtype=dtype)

        return load

    settings = {"setting": Setting("none", "float32"), "reference": Setting("none", "bfloat16")}
    same(
        compare_settings(loader(None), SENTENCE, **settings),
        compare_settings(loader(tmp_path / "compare"), SENTENCE, **settings),
    )

    planted_plain = load_model(str(planted), quant="none", device="cpu")
    planted_offloaded = load_offloaded(str(planted), tmp_path / "outliers")
    same(find_outliers(planted_plain, texts), find_outliers(planted_offloaded, texts))


def test_an_offload_dir_under_home_is_the_folder_that_was_checked(tmp_path, monkeypatch) -> None:
    # check_offload_dir expands ~; accelerate would write to a literal ./~ folder.
    from optinspect.model.loading import resolve_placement
    from optinspect.model.settings import LoadSettings

    monkeypatch.setenv("HOME", str(tmp_path))
    placement = resolve_placement(offload_dir="~/offload")
    assert placement.offload_dir == str(tmp_path / "offload")
    assert LoadSettings("tiny", offload_dir="~/offload").settings()["offload_dir"] == str(
        tmp_path / "offload"
    )
