"""``optinspect outliers``: a planted outlier dimension is found; clean models report none."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from rich.console import Console
from torch import nn

from conftest import PLANTED, RESULT_HEAD, json_of, plant_outlier
from optinspect.analyses.outliers import (
    DimCount,
    ModuleOutliers,
    find_outliers,
    module_threshold,
    summarize_recurring,
)
from optinspect.engine.runner import encode
from optinspect.errors import UsageError
from optinspect.model.loading import load_model
from optinspect.render.outliers import outliers_page, render_outliers
from optinspect.render.page import Heatmap
from optinspect.results.outliers import OutlierResult
from optinspect.results.records import ModelInfo

SENTENCES = (
    "The quick brown fox jumps over the lazy dog",
    "Hello",
    "A longer sentence, with some punctuation; it pads the others in its batch.",
)
ROLES = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj")
TOP_KEYS = RESULT_HEAD | {
    "threshold",
    "criteria",
    "num_layers",
    "sentences",
    "tokens",
    "modules",
    "recurring",
}
MODULE_KEYS = {
    "name",
    "type",
    "layer",
    "in_features",
    "threshold",
    "threshold_source",
    "summary",
    "tokens",
    "tokens_affected",
    "token_fraction",
    "absmax",
    "dims",
}


@pytest.fixture(scope="module")
def planted(make_fixture_model) -> Path:
    return make_fixture_model("planted", mutate=plant_outlier, num_hidden_layers=4)


@pytest.fixture(scope="module")
def clean(make_fixture_model) -> Path:
    return make_fixture_model("clean", num_hidden_layers=4)


@pytest.fixture
def sentences_file(tmp_path: Path) -> Path:
    path = tmp_path / "sentences.txt"
    path.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    return path


def outliers_json(cli, *args: str) -> dict:
    return json_of(cli, "outliers", *args)


def token_count(model: str) -> int:
    loaded = load_model(model, quant="none", device="cpu")
    return sum(len(encode(loaded, text)) for text in SENTENCES)


@pytest.mark.parametrize("quant", ["8bit", "none"])
def test_planted_dimension_is_found_in_every_layer(
    cli, planted: Path, sentences_file: Path, quant: str
) -> None:
    doc = outliers_json(
        cli, "--file", str(sentences_file), "--model", str(planted), "--quant", quant, "-b", "2"
    )
    tokens = token_count(str(planted))
    assert doc["sentences"] == 3 and doc["tokens"] == tokens and doc["num_layers"] == 4
    names = [m["name"] for m in doc["modules"]]
    assert len(names) == 4 * 6
    for module in doc["modules"]:
        role = module["name"].split(".", 4)[-1]
        assert module["tokens"] == tokens, module["name"]  # padding is not counted
        assert module["threshold"] == 6.0
        assert module["threshold_source"] == ("module" if quant == "8bit" else "option")
        assert module["summary"] is (role != "fc2")
        if role in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "fc1"):
            assert [d["dim"] for d in module["dims"]] == [PLANTED], module["name"]
            dim = module["dims"][0]
            assert dim["count"] == tokens and dim["fraction"] == 1.0
            assert 15.0 < dim["absmax"] == module["absmax"] < 30.0
            assert module["tokens_affected"] == tokens and module["token_fraction"] == 1.0
        else:  # out_proj and fc2 read what attention and the ReLU made: no outlier
            assert module["dims"] == [] and module["tokens_affected"] == 0, module["name"]
    [recurring] = doc["recurring"]
    assert recurring["dim"] == PLANTED and recurring["layers"] == [0, 1, 2, 3]
    assert recurring["layer_fraction"] == 1.0
    assert recurring["token_fraction"] == pytest.approx(4 / 5)  # q, k, v, fc1 of 5 inputs


def test_modules_come_in_execution_order(cli, planted: Path) -> None:
    doc = outliers_json(cli, "Hello", "--model", str(planted), "--quant", "none")
    roles = [m["name"].split(".", 4)[-1] for m in doc["modules"][:6]]
    assert roles == [*ROLES, "fc1", "fc2"]
    assert [m["layer"] for m in doc["modules"]] == [i for i in range(4) for _ in range(6)]


def test_threshold_above_the_plant_finds_nothing(cli, planted: Path) -> None:
    doc = outliers_json(
        cli, "Hello", "--model", str(planted), "--quant", "none", "--threshold", "40"
    )
    assert doc["threshold"] == 40.0
    assert all(m["dims"] == [] and m["threshold"] == 40.0 for m in doc["modules"])
    assert doc["recurring"] == []


def test_8bit_layers_keep_their_own_threshold(cli, planted: Path) -> None:
    doc = outliers_json(cli, "Hello", "--model", str(planted), "--threshold", "40")
    assert all(m["threshold"] == 6.0 for m in doc["modules"])
    assert doc["recurring"][0]["dim"] == PLANTED


@pytest.mark.parametrize("model", ["clean", "tiny"])
def test_models_without_a_plant_report_none(
    cli, clean: Path, sentences_file: Path, model: str
) -> None:
    spec = str(clean) if model == "clean" else "tiny"
    doc = outliers_json(cli, "--file", str(sentences_file), "--model", spec)
    assert doc["sentences"] == 3
    for module in doc["modules"]:
        assert module["dims"] == [] and module["tokens_affected"] == 0, module["name"]
        assert module["absmax"] < 6.0
    assert doc["recurring"] == []


def test_json_has_the_documented_keys(cli, planted: Path) -> None:
    doc = outliers_json(cli, "Hello world", "--model", str(planted))
    assert set(doc) == TOP_KEYS
    assert doc["schema"] == 1 and doc["quant"] == "8bit" and doc["dtype"] == "float16"
    assert doc["criteria"] == {"min_layer_fraction": 0.25, "min_token_fraction": 0.06}
    assert doc["random_weights"] is False and doc["threshold"] == 6.0
    for module in doc["modules"]:
        assert set(module) == MODULE_KEYS
        for dim in module["dims"]:
            assert set(dim) == {"dim", "count", "fraction", "absmax"}
    assert set(doc["recurring"][0]) == {
        "dim",
        "layers",
        "layer_fraction",
        "token_fraction",
        "absmax",
    }


def test_stdin_and_batching_give_the_same_counts(
    cli, planted: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = ("\n".join(SENTENCES) + "\n").encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    piped = outliers_json(cli, "-", "--model", str(planted), "--quant", "none", "-b", "3")
    loaded = load_model(str(planted), quant="none", device="cpu")
    alone = find_outliers(loaded, SENTENCES, batch_size=1).as_dict()
    # Padding changes float rounding in the attention, never what is counted.
    for batched, single in zip(piped["modules"], alone["modules"], strict=True):
        assert batched["absmax"] == pytest.approx(single["absmax"], rel=1e-5)
        for a, b in zip(batched["dims"], single["dims"], strict=True):
            assert a["absmax"] == pytest.approx(b["absmax"], rel=1e-5)
            assert {**a, "absmax": 0} == {**b, "absmax": 0}
        assert {**batched, "absmax": 0, "dims": 0} == {**single, "absmax": 0, "dims": 0}
    assert [r["dim"] for r in piped["recurring"]] == [r["dim"] for r in alone["recurring"]]
    assert piped["tokens"] == alone["tokens"] == token_count(str(planted))


def test_table_shows_modules_and_the_recurring_dimension(cli, planted: Path) -> None:
    result = cli("outliers", "Hello", "--model", str(planted), "--quant", "none")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].startswith(f"model {planted} · quant none · device cpu · dtype float32 · ")
    assert lines[0].endswith(" · 1 sentence · 3 tokens")  # </s>, then "Hello" in two pieces
    # Names sit under a heading row per layer, relative to it.
    heading = next(i for i, line in enumerate(lines) if "model.decoder.layers.0 " in line)
    q_proj = next(line for line in lines[heading:] if " self_attn.q_proj " in line)
    assert "6 (option)" in q_proj and f"{PLANTED} (100%)" in q_proj
    assert any(line.startswith("recurring dimensions (1)") for line in lines)
    row = next(line for line in lines if "0-3" in line)
    assert row.split("│")[1].strip() == str(PLANTED)


def test_table_says_when_nothing_recurs(cli) -> None:
    result = cli("outliers", "Hello", "--model", "tiny")
    assert result.code == 0, result.err
    assert "no dimension reaches the threshold in at least 25% of the 4 layers" in result.out
    assert "6 (module)" in result.out


def _row(layer: int, role: str, dims: dict[int, int], tokens: int = 100) -> ModuleOutliers:
    return ModuleOutliers(
        name=f"model.decoder.layers.{layer}.{role}",
        type="Linear",
        layer=layer,
        in_features=16,
        threshold=6.0,
        threshold_source="option",
        summary=role != "fc2",
        tokens=tokens,
        tokens_affected=max(dims.values(), default=0),
        absmax=7.0 if dims else 1.0,
        dims=tuple(DimCount(d, n, n / tokens, 7.0) for d, n in dims.items()),
    )


def test_recurring_criteria_are_inclusive_and_count_summary_inputs_only() -> None:
    # 8 layers x 2 summary inputs of 100 tokens: 1600 pairs; 6% is 96 of them.
    rows = [_row(layer, role, {}) for layer in range(8) for role in ("self_attn.q_proj", "fc1")]
    rows[0] = _row(0, "self_attn.q_proj", {1: 48, 2: 100, 3: 100})
    rows[2] = _row(1, "self_attn.q_proj", {1: 48, 2: 100})
    rows += [_row(layer, "fc2", {4: 100}) for layer in range(8)]  # fc2 is left out
    recurring = summarize_recurring(rows, 8)
    # dim 1: layers 0-1 (25%), 96 pairs (6%): recurs. dim 2: 200 pairs but 25%: recurs.
    # dim 3: one layer (12.5%): does not. dim 4: only in fc2: does not.
    assert [r.dim for r in recurring] == [1, 2]
    assert recurring[0].layers == (0, 1) and recurring[0].layer_fraction == 0.25
    assert recurring[0].token_fraction == pytest.approx(0.06)
    rows[2] = _row(1, "self_attn.q_proj", {1: 47, 2: 100})  # 95 pairs: below 6%
    assert [r.dim for r in summarize_recurring(rows, 8)] == [2]


def test_module_threshold_reads_the_llm_int8_state(load_tiny) -> None:
    loaded = load_tiny("8bit")
    fc1 = loaded.model.model.decoder.layers[0].fc1
    assert module_threshold(fc1, 3.0) == (6.0, "module")
    assert module_threshold(nn.Linear(2, 2), 3.0) == (3.0, "option")


def test_hooks_are_removed_when_a_sentence_fails(load_tiny) -> None:
    loaded = load_tiny("none")
    with pytest.raises(UsageError, match="accepts at most 128"):
        find_outliers(loaded, ["Hello", "word " * 200])
    assert all(not m._forward_pre_hooks for m in loaded.model.modules())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("Hello", "--threshold", "0"), "--threshold must be a finite number above 0, not 0.0"),
        (("Hello", "--threshold", "inf"), "--threshold must be a finite number above 0, not inf"),
        (("Hello", "--batch-size", "0"), "--batch-size must be at least 1, not 0"),
        (("--file", "no-such-file.txt"), "input file no-such-file.txt does not exist"),
        (("Hello", "--file", "x.txt"), "give TEXT or --file, not both"),
        ((), "give the text to inspect, - for stdin, or --file PATH"),
    ],
)
def test_usage_errors_exit_2(cli, args: tuple[str, ...], message: str) -> None:
    result = cli("outliers", "--model", "tiny", *args)
    assert result.code == 2
    assert result.err == f"Error: {message}\n"
    assert result.out == ""


def test_empty_input_exits_2(cli, tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    result = cli("outliers", "--file", str(empty), "--model", "tiny")
    assert result.code == 2
    assert result.err == "Error: the input holds no sentences: give at least one line of text\n"


def _result(rows: list[ModuleOutliers], num_layers: int) -> OutlierResult:
    return OutlierResult(
        info=ModelInfo("tiny", "none", "cpu", "float32", random_weights=True),
        threshold=6.0,
        num_layers=num_layers,
        sentences=1,
        tokens=rows[0].tokens,
        modules=tuple(rows),
        recurring=tuple(summarize_recurring(rows, num_layers)),
    )


def test_page_holds_a_layer_by_dimension_heatmap_of_the_summary_inputs() -> None:
    rows = [
        _row(layer, role, {})
        for layer in range(3)
        for role in ("self_attn.q_proj", "self_attn.out_proj", "fc1", "fc2")
    ]
    rows[0] = _row(0, "self_attn.q_proj", {7: 40, 2: 5})
    rows[2] = _row(0, "fc1", {7: 30})
    rows[8] = _row(2, "self_attn.q_proj", {2: 9})
    rows[11] = _row(2, "fc2", {99: 100})  # fc2 reads the FFN dimension: left out
    page = outliers_page(_result(rows, 3))
    (heatmap,) = [part for part in page.parts if isinstance(part, Heatmap)]
    assert not heatmap.terminal  # a picture for writers that draw them
    # Rows are the decoder layers, columns the hidden dimensions that reached the
    # threshold in a summary input; each cell the (input, token) pairs, summed exactly.
    assert list(heatmap.rows) == ["0", "1", "2"] and list(heatmap.columns) == ["2", "7"]
    assert [len(row) for row in heatmap.values] == [2, 2, 2]
    assert [list(row) for row in heatmap.values] == [[5, 70], [0, 0], [9, 0]]
    assert heatmap.high == 3 * 100  # q_proj, out_proj and fc1 of 100 tokens each
    assert all(heatmap.low <= v <= heatmap.high for row in heatmap.values for v in row)
    assert page.data == _result(rows, 3).as_dict()
    # The terminal leaves the picture out.
    buffer = io.StringIO()
    render_outliers(Console(file=buffer, width=120, color_system=None), _result(rows, 3))
    assert heatmap.title not in buffer.getvalue()


def test_page_has_no_heatmap_when_no_dimension_reaches_the_threshold() -> None:
    rows = [_row(layer, "fc1", {}) for layer in range(2)] + [_row(1, "fc2", {3: 4})]
    page = outliers_page(_result(rows, 2))
    assert not [part for part in page.parts if isinstance(part, Heatmap)]
