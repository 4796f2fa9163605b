"""``optinspect trace`` through the real entry point: JSON, tables, errors and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import TINY, json_of
from optinspect.results.records import STAT_NAMES

SENTENCE = "The quick brown fox jumps over the lazy dog"
# A word list reads better than a column of twelve one-word lines.
_KEYS = "name type layer call output shape dtype device weight_dtype weight_shape weight_device"
MODULE_KEYS = {*_KEYS.split(), "stats"}


def trace_json(cli, *args: str) -> dict:
    return json_of(cli, "trace", SENTENCE, "--model", "tiny", *args)


@pytest.mark.parametrize("quant", ["none", "8bit", "4bit"])
def test_json_has_the_documented_keys(cli, quant: str) -> None:
    doc = trace_json(cli, "--quant", quant, "--layer", "0")
    assert doc["schema"] == 1
    assert doc["model"] == "tiny" and doc["quant"] == quant and doc["device"] == "cpu"
    assert doc["random_weights"] is True and doc["text"] == SENTENCE
    assert doc["tokens"][0] == {"id": 2, "text": "</s>"}
    assert [t["text"] for t in doc["tokens"][1:3]] == ["The", " quick"]
    assert len(doc["modules"]) == 11
    for module in doc["modules"]:
        assert set(module) == MODULE_KEYS
        assert module["layer"] == 0
        assert set(module["stats"]) == set(STAT_NAMES)
    fc1 = next(m for m in doc["modules"] if m["name"].endswith(".fc1"))
    assert fc1["shape"] == [10, 256]
    expected_weight = {"none": "float32", "8bit": "int8", "4bit": "uint8"}[quant]
    assert fc1["weight_dtype"] == expected_weight
    assert fc1["dtype"] == ("float32" if quant == "none" else "float16")


def test_overview_without_layer(cli) -> None:
    doc = trace_json(cli, "--quant", "none")
    assert [m["name"] for m in doc["modules"]] == [
        "model.decoder.embed_tokens",
        "model.decoder.embed_positions",
        "model.decoder.layers.0",
        "model.decoder.layers.1",
        "model.decoder.layers.2",
        "model.decoder.layers.3",
        "model.decoder.final_layer_norm",
        "lm_head",
    ]
    assert doc["modules"][-1]["shape"] == [1, 10, 512]
    assert doc["modules"][2]["layer"] == 0 and doc["modules"][0]["layer"] is None


def test_last_layer_and_lists(cli) -> None:
    last = trace_json(cli, "--quant", "none", "--layer", "-1")
    assert {m["layer"] for m in last["modules"]} == {3}
    pair = trace_json(cli, "--quant", "none", "--layer", "0,2")
    assert {m["layer"] for m in pair["modules"]} == {0, 2}


def test_table_lists_tokens_then_modules(cli) -> None:
    result = cli("trace", SENTENCE, "--model", "tiny", "--quant", "none", "--layer", "0")
    assert result.code == 0, result.err
    out = result.out
    assert out.startswith("model tiny · quant none · device cpu · dtype float32\n")
    assert "random weights" in out
    # The layer's modules are a tree under the layer, names relative to their parent.
    assert out.index('" quick"') < out.index("│ model.decoder.layers.0 ")
    assert out.index("self_attn_layer_norm") < out.index("│     q_proj ")
    assert out.index("│   fc1 ") < out.index("│   activation_fn ") < out.index("│   fc2 ")
    assert result.err == ""


def test_model_from_environment_variable(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTINSPECT_MODEL", "tiny")
    result = cli("trace", "hello", "--quant", "none", "--format", "json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["model"] == "tiny"


def test_opt350m_shaped_model(cli, opt350m_like: Path) -> None:
    result = cli(
        "trace", "hello world", "--model", str(opt350m_like), "--quant", "none", "-f", "json"
    )
    assert result.code == 0, result.err
    names = [m["name"] for m in json.loads(result.out)["modules"]]
    assert names[:3] == [
        "model.decoder.embed_tokens",
        "model.decoder.embed_positions",
        "model.decoder.project_in",
    ]
    # Post-LayerNorm models (opt-350m) have no final layer norm in the decoder.
    assert names[-2:] == ["model.decoder.project_out", "lm_head"]
    assert "model.decoder.final_layer_norm" not in names
    doc = json.loads(
        cli("trace", "hi", "--model", str(opt350m_like), "-q", "none", "-l", "0", "-f", "json").out
    )
    order = [m["name"].removeprefix("model.decoder.layers.0") for m in doc["modules"]]
    assert order == [
        "",
        ".self_attn",
        ".self_attn.q_proj",
        ".self_attn.k_proj",
        ".self_attn.v_proj",
        ".self_attn.out_proj",
        ".self_attn_layer_norm",
        ".fc1",
        ".activation_fn",
        ".fc2",
        ".final_layer_norm",
    ]
    overview = json.loads(result.out)
    project_in = next(m for m in overview["modules"] if m["name"].endswith("project_in"))
    tokens = len(overview["tokens"])
    assert project_in["shape"] == [1, tokens, 32] and project_in["weight_shape"] == [32, 16]
    embed = overview["modules"][0]
    assert embed["shape"] == [1, tokens, 16]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["   "], 2, "the text is empty: give at least one word to trace"),
        (["hi", "--model", "./no-such-folder"], 2, "model folder ./no-such-folder does not exist"),
        (["hi", "--layer", "9"], 2, "layer 9 does not exist: the model has layers 0-3"),
        (["hi", "--layer", "3-"], 2, "cannot read layer spec '3-': use N, N-M, N,M, -1 or all"),
        (["hi", "--device", "gpu"], 2, "unknown device 'gpu': use auto, cpu, cuda or cuda:N"),
        (
            [" the" * 150],
            2,
            "the text has 151 tokens; tiny accepts at most 128 (or use --truncate)",
        ),
    ],
)
def test_usage_errors(cli, args: list[str], code: int, message: str) -> None:
    defaults = ["--quant", "none"] + ([] if "--model" in args else ["--model", "tiny"])
    result = cli("trace", *defaults, *args)
    assert result.code == code
    assert result.err.splitlines()[0] == f"Error: {message}"
    assert result.out == ""
    assert "Traceback" not in result.err


def test_bad_choice_names_the_option_the_value_and_the_choices(cli) -> None:
    # The sentence itself is click's and its wording changes between click versions;
    # what the user needs from it does not.
    result = cli("trace", "hi", "--model", "tiny", "--quant", "3bit")
    assert (result.code, result.out) == (2, "")
    first = result.err.splitlines()[0]
    assert first.startswith("Error: ") and "Traceback" not in result.err
    for word in ("--quant", "3bit", "8bit", "4bit", "none"):
        assert word in first, word


def test_folder_without_config(cli, tmp_path: Path) -> None:
    result = cli("trace", "hi", "--model", str(tmp_path))
    assert (result.code, result.err) == (1, f"Error: model folder {tmp_path} has no config.json\n")


def test_not_an_opt_model(cli, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    result = cli("trace", "hi", "--model", str(tmp_path))
    assert result.code == 1
    assert (
        result.err == f"Error: {tmp_path} is not an OPT model: its config has model_type 'gpt2'\n"
    )


def test_hub_model_not_cached_offline(cli) -> None:
    result = cli("trace", "hi", "--model", "someone/opt-7b")
    assert result.code == 1
    assert result.err == (
        "Error: cannot get the config of someone/opt-7b: it is not in the Hugging Face "
        "cache and the hub could not be reached or has no such model\n"
    )


def test_family_model_not_cached_offline(cli) -> None:
    # The config is built in, so the first thing missing offline is the tokenizer.
    result = cli("trace", "hi", "--model", "facebook/opt-125m")
    assert result.code == 1
    assert result.err == (
        "Error: cannot load the tokenizer of facebook/opt-125m: it is not in the Hugging Face "
        "cache and the hub could not be reached\n"
    )


def test_cuda_without_cuda(cli) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = cli("trace", "hi", "--model", "tiny", "--device", "cuda")
    assert result.code == 2
    assert result.err == "Error: device cuda was asked for, but CUDA is not available here\n"


def test_debug_shows_the_traceback(cli) -> None:
    result = cli("trace", "hi", "--model", "tiny", "--layer", "9", "--debug")
    assert result.code == 2
    assert "Traceback" in result.err
    assert result.err.rstrip().endswith("Error: layer 9 does not exist: the model has layers 0-3")


@pytest.mark.parametrize(
    "args",
    [
        ("--format", "JSON", "-q", "none"),
        ("-f", "json", "-q", "none", "--stats", "ABSMAX"),
        ("-f", "json", "--quant", "NONE"),
        ("-f", "json", "-q", "none", "--layer", "ALL"),
    ],
    ids=["format", "stats", "quant", "layer"],
)
def test_choices_are_case_insensitive(cli, args) -> None:
    result = cli("trace", "Hello", "--model", "tiny", *args)
    assert result.code == 0, result.err
    document = json.loads(result.out)  # --format JSON gave JSON
    assert document["quant"] == "none"
    if "ABSMAX" in args:
        assert set(document["modules"][0]["stats"]) == {"absmax"}
    if "ALL" in args:
        assert {m["layer"] for m in document["modules"]} == {0, 1, 2, 3}


# --- what the tables show ---------------------------------------------------------------------


def test_byte_level_tokens_have_bytes_and_distinct_labels(cli) -> None:
    # "—" (U+2014) is three UTF-8 bytes that OPT's byte-level BPE splits over tokens;
    # each piece decodes to U+FFFD alone, so only its bytes tell the pieces apart.
    text = "a—b"
    data = json.loads(cli("trace", text, *TINY, "--layer", "0", "-f", "json").out)
    pieces = [token for token in data["tokens"] if "bytes" in token]
    assert len(pieces) >= 2
    assert "".join(token["bytes"].replace(" ", "") for token in pieces).lower() == "e28094"
    table = cli("trace", text, *TINY, "--layer", "0").out
    labels = ["".join(f"<0x{b.upper()}>" for b in token["bytes"].split()) for token in pieces]
    assert len(set(labels)) == len(labels)
    for label in labels:
        assert label in table
    assert "\ufffd" not in table
