"""optinspect params: exact counts from the config, breakdowns that add up, bytes, --loaded."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from conftest import fresh_run, json_of
from conftest import render_params_text as _render
from optinspect.analyses.params import (
    LoadedCount,
    estimate_bytes,
    inventory_params,
)
from optinspect.model.family import FAMILY, ParamEntry, list_config_params
from optinspect.render.common import format_bytes

#: Published shapes, written out here independently of optinspect.model.family:
#: size -> (layers, heads, d_model, ffn, word_embed_proj_dim, pre-LayerNorm).
PUBLISHED = {
    "125m": (12, 12, 768, 3072, 768, True),
    "350m": (24, 16, 1024, 4096, 512, False),
    "1.3b": (24, 32, 2048, 8192, 2048, True),
    "2.7b": (32, 32, 2560, 10240, 2560, True),
    "6.7b": (32, 32, 4096, 16384, 4096, True),
    "13b": (40, 40, 5120, 20480, 5120, True),
    "30b": (48, 56, 7168, 28672, 7168, True),
    "66b": (64, 72, 9216, 36864, 9216, True),
    "175b": (96, 96, 12288, 49152, 12288, True),
}
VOCAB = 50272
POSITIONS = 2048
BY_MODES = ("group", "layer", "module", "type")


def closed_form(layers: int, d: int, ffn: int, word: int, pre_ln: bool) -> int:
    """OPT's parameter count, tied lm_head counted once.

    token embeddings V*w; learned positions (P+2)*d (OPT offsets them by 2);
    project_in/out 2*d*w when w != d (no bias); a final LayerNorm 2*d for
    pre-LayerNorm models; per layer: q, k, v, out (d*d + d each), fc1 (d*f + f),
    fc2 (f*d + d) and two LayerNorms (2*d each).
    """
    embeddings = VOCAB * word + (POSITIONS + 2) * d
    projections = 2 * d * word if word != d else 0
    final_norm = 2 * d if pre_ln else 0
    per_layer = 4 * (d * d + d) + (d * ffn + ffn) + (ffn * d + d) + 2 * (2 * d)
    return embeddings + projections + final_norm + layers * per_layer


def params_json(cli, *args: str) -> dict:
    return json_of(cli, "params", *args)


def test_closed_form_matches_the_known_figures() -> None:
    assert closed_form(*_shape("1.3b")) == 1_315_758_080
    assert closed_form(*_shape("350m")) == 331_196_416


def _shape(size: str) -> tuple[int, int, int, int, bool]:
    layers, _heads, d, ffn, word, pre_ln = PUBLISHED[size]
    return layers, d, ffn, word, pre_ln


@pytest.mark.parametrize("size", list(PUBLISHED))
def test_family_totals_are_exact(cli, size: str) -> None:
    doc = params_json(cli, "--model", f"facebook/opt-{size}")
    assert doc["schema"] == 1
    assert doc["model"] == f"facebook/opt-{size}"
    assert doc["total"] == closed_form(*_shape(size))
    assert doc["tied"] is True
    assert doc["builtin_config"] is True
    assert set(doc["bytes"]) == {"float32", "float16", "int8", "nf4"}
    assert doc["bytes"]["float32"] == 4 * doc["total"]
    assert doc["bytes"]["float16"] == 2 * doc["total"]
    assert doc["bytes"]["nf4"] < doc["bytes"]["int8"] < doc["bytes"]["float16"]


@pytest.mark.parametrize("size", list(PUBLISHED))
def test_family_resolves_offline(size: str) -> None:
    from optinspect.model.spec import read_config, resolve_source

    layers, heads, d, ffn, word, pre_ln = PUBLISHED[size]
    config = read_config(resolve_source(f"facebook/opt-{size}"))
    assert (config.num_hidden_layers, config.num_attention_heads) == (layers, heads)
    assert (config.hidden_size, config.ffn_dim, config.word_embed_proj_dim) == (d, ffn, word)
    assert config.do_layer_norm_before is pre_ln
    assert (config.vocab_size, config.max_position_embeddings) == (VOCAB, POSITIONS)


def test_unknown_hub_model_offline_is_a_clear_error(cli) -> None:
    result = cli("params", "--model", "facebook/opt-7b")
    assert (result.code, result.out) == (1, "")
    assert result.err == (
        "Error: cannot get the config of facebook/opt-7b: it is not in the Hugging Face "
        "cache and the hub could not be reached or has no such model\n"
    )


def _meta_entries(raw: dict) -> tuple[tuple[ParamEntry, ...], str | None]:
    from transformers import OPTConfig

    from optinspect.analyses.params import list_module_params
    from optinspect.model.spec import build_meta_model

    return list_module_params(build_meta_model(OPTConfig.from_dict(raw)))


@pytest.mark.parametrize("name", list(FAMILY))
def test_config_count_equals_the_meta_model(name: str) -> None:
    """The pure-Python parameter list is the one transformers builds, name for name."""
    assert list_config_params(FAMILY[name]) == _meta_entries(FAMILY[name])


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"enable_bias": False},
        {"layer_norm_elementwise_affine": False},
        {"tie_word_embeddings": False},
        {"word_embed_proj_dim": 16},
        {"word_embed_proj_dim": 16, "do_layer_norm_before": False, "tie_word_embeddings": False},
        {"_remove_final_layer_norm": True},
    ],
)
def test_config_count_follows_every_structural_option(overrides: dict) -> None:
    raw = {
        "model_type": "opt",
        "vocab_size": 100,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "ffn_dim": 64,
        "num_attention_heads": 4,
        "max_position_embeddings": 40,
        **overrides,
    }
    assert list_config_params(raw) == _meta_entries(raw)


@pytest.mark.parametrize("by", BY_MODES)
@pytest.mark.parametrize("model", ["facebook/opt-350m", "facebook/opt-1.3b", "tiny"])
def test_every_breakdown_adds_up(cli, model: str, by: str) -> None:
    doc = params_json(cli, "--model", model, "--by", by)
    assert doc["by"] == by
    assert sum(row["params"] for row in doc["rows"]) == doc["total"]
    for precision, value in doc["bytes"].items():
        assert sum(row["bytes"][precision] for row in doc["rows"]) == value
    assert len({row["name"] for row in doc["rows"]}) == len(doc["rows"])


def test_breakdown_rows(cli) -> None:
    groups = params_json(cli, "--model", "facebook/opt-350m", "--by", "group")
    # opt-350m's groups, in the documented order: no head of its own (tied), no "other".
    shown = "token embeddings, position embeddings, projections, attention projections, "
    shown += "feed-forward layers, layer norms"
    assert [row["name"] for row in groups["rows"]] == shown.split(", ")
    layers = params_json(cli, "--model", "facebook/opt-1.3b", "--by", "layer")
    names = [row["name"] for row in layers["rows"]]
    assert [n for n in names if ".layers." in n] == [f"model.decoder.layers.{i}" for i in range(24)]
    assert "model.decoder.final_layer_norm" in names
    assert "lm_head" not in names  # tied: counted once, under the token embeddings
    modules = params_json(cli, "--model", "facebook/opt-125m", "--by", "module")
    assert "model.decoder.layers.0.fc1" in [row["name"] for row in modules["rows"]]
    types = params_json(cli, "--model", "tiny", "--by", "type")
    assert {row["name"] for row in types["rows"]} == {
        "Embedding",
        "OPTLearnedPositionalEmbedding",
        "LayerNorm",
        "Linear",
    }


def test_untied_head_is_counted(cli, tmp_path: Path) -> None:
    raw = {**FAMILY["facebook/opt-125m"], "tie_word_embeddings": False}
    (tmp_path / "config.json").write_text(json.dumps(raw))
    doc = params_json(cli, "--model", str(tmp_path))
    assert doc["tied"] is False
    assert doc["total"] == closed_form(*_shape("125m")) + VOCAB * 768
    assert doc["rows"][-1]["name"] == "lm head"


def test_csv_parses_with_a_header(cli) -> None:
    result = cli("params", "--model", "facebook/opt-350m", "--by", "layer", "--format", "csv")
    assert result.code == 0, result.err
    rows = list(csv.DictReader(io.StringIO(result.out)))
    assert list(rows[0]) == ["name", "params", "float32", "float16", "int8", "nf4"]
    assert sum(int(row["params"]) for row in rows) == 331_196_416
    assert len(rows) == 24 + 4  # layers, embed_tokens, embed_positions, project_out, project_in


def test_bytes_of_one_quantized_weight() -> None:
    fc1 = ParamEntry(
        "model.decoder.layers.0.fc1.weight", "model.decoder.layers.0.fc1", "Linear", (256, 64)
    )
    got = estimate_bytes(fc1)
    assert (got.float32, got.float16) == (256 * 64 * 4, 256 * 64 * 2)
    assert got.int8 == 256 * 64 + 256 * 4  # int8 values + a float32 scale per output row
    assert got.nf4 == 256 * 64 // 2 + (256 * 64 // 64) * 4 + 64  # packed + absmax + code table
    bias = ParamEntry(
        "model.decoder.layers.0.fc1.bias", "model.decoder.layers.0.fc1", "Linear", (256,)
    )
    head = ParamEntry("lm_head.weight", "lm_head", "Linear", (512, 64))
    for entry in (bias, head):
        got = estimate_bytes(entry)
        assert got.int8 == got.nf4 == got.float16 == 2 * entry.numel


@pytest.mark.parametrize(
    ("quant", "precision"), [("none", "float32"), ("8bit", "int8"), ("4bit", "nf4")]
)
def test_loaded_tiny_has_the_config_count(cli, quant: str, precision: str) -> None:
    doc = params_json(cli, "--model", "tiny", "--loaded", "--quant", quant, "--device", "cpu")
    loaded = doc["loaded"]
    assert loaded["quant"] == quant
    assert loaded["params"] == doc["total"] == 241_152
    assert loaded["matches_config"] is True
    # The byte layout the estimate assumes is the one bitsandbytes really stores.
    assert loaded["bytes"] == doc["bytes"][precision]
    if quant == "4bit":
        assert loaded["stored"] < loaded["params"]  # two 4-bit values per uint8 element
    else:
        assert loaded["stored"] == loaded["params"]


@pytest.mark.parametrize(("quant", "precision"), [("8bit", "int8"), ("4bit", "nf4")])
def test_loaded_projections_are_quantized_too(
    cli, opt350m_like: Path, quant: str, precision: str
) -> None:
    doc = params_json(
        cli, "--model", str(opt350m_like), "--loaded", "--quant", quant, "--device", "cpu"
    )
    assert doc["loaded"]["params"] == doc["total"]
    assert doc["loaded"]["bytes"] == doc["bytes"][precision]


def test_unknown_breakdown_is_a_usage_error(cli) -> None:
    result = cli("params", "--model", "tiny", "--by", "head")
    assert result.code == 2
    # click words this sentence, differently across its versions; check what it names.
    first = result.err.splitlines()[0]
    assert first.startswith("Error: ")
    for word in ("--by", "head", *BY_MODES):
        assert word in first, word


def test_loaded_has_no_csv(cli) -> None:
    result = cli("params", "--model", "tiny", "--loaded", "--format", "csv")
    assert (result.code, result.out) == (2, "")
    assert result.err == "Error: --loaded has no CSV form: use --format table or --format json\n"


def test_family_counts_without_importing_torch() -> None:
    fresh = fresh_run(["params", "--model", "facebook/opt-175b", "--format", "json"])
    assert fresh.code == 0, fresh.err
    assert json.loads(fresh.out)["total"] == closed_form(*_shape("175b"))
    assert fresh.heavy == []


def test_format_bytes() -> None:
    assert [format_bytes(n) for n in (0, 1023, 1024, 1536, 10 * 2**30, 700 * 2**40)] == [
        "0 B",
        "1023 B",
        "1.00 KiB",
        "1.50 KiB",
        "10.0 GiB",
        "700 TiB",
    ]


def test_a_loaded_count_never_says_no_weights_were_read() -> None:
    # `params --loaded` printed "config on the meta device, no weights read" above
    # "loaded with quant 8bit": the count came from the config, but weights were read.
    inventory = inventory_params("facebook/opt-125m")
    loaded = LoadedCount("8bit", "cpu", "float16", 125_239_296, 125_239_296, 157_772_544)
    with_load = _render(inventory, "group", loaded)
    assert "no weights read" not in with_load
    assert "counted from the built-in config; the loaded model is measured below" in with_load
    assert "loaded with quant 8bit · device cpu · dtype float16\n" in with_load
    assert "counted from the built-in config; no weights read" in _render(inventory, "group")
