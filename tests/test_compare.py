"""``optinspect compare``: metrics, the first module above the tolerance, memory, errors."""

from __future__ import annotations

import gc
import math
import weakref

import pytest
import torch

from conftest import json_of
from optinspect.analyses.compare import Setting, compare_settings, compare_tensors
from optinspect.model.loading import load_model

SENTENCE = "The quick brown fox jumps over the lazy dog"
LINEARS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
TOP_KEYS = {
    "schema",
    "index",  # the sentence's position, as in trace; added for --file and stdin input
    "model",
    "device",
    "random_weights",
    "text",
    "tokens",
    "setting",
    "reference",
    "tolerance",
    "first_exceeding",
    "modules",
}
MODULE_KEYS = set(  # a word list reads better than a column of one-word lines
    "name type reference_type layer call shape status cosine rel_error max_abs_diff exceeds".split()  # noqa: SIM905
)


def compare_json(cli, *args: str) -> dict:
    return json_of(cli, "compare", SENTENCE, "--model", "tiny", *args)


def test_json_has_the_documented_keys(cli) -> None:
    doc = compare_json(cli, "--layer", "0")
    assert set(doc) == TOP_KEYS
    assert doc["schema"] == 1
    assert doc["model"] == "tiny" and doc["device"] == "cpu" and doc["random_weights"] is True
    assert doc["text"] == SENTENCE and doc["tokens"][0] == {"id": 2, "text": "</s>"}
    # Defaults: 8bit against full precision, auto dtypes resolved.
    assert doc["setting"] == {"quant": "8bit", "dtype": "float16"}
    assert doc["reference"] == {"quant": "none", "dtype": "float32"}
    assert doc["tolerance"] == 0.05
    assert len(doc["modules"]) == 11
    for module in doc["modules"]:
        assert set(module) == MODULE_KEYS
        assert module["layer"] == 0 and module["status"] == "compared"
    fc1 = next(m for m in doc["modules"] if m["name"].endswith(".fc1"))
    assert fc1["type"] == "Linear8bitLt" and fc1["reference_type"] == "Linear"
    assert fc1["shape"] == [10, 256]


@pytest.mark.parametrize("quant", ["8bit", "none"])
def test_a_setting_against_itself_has_no_error(cli, quant: str) -> None:
    doc = compare_json(cli, "--quant", quant, "--against", quant, "--layer", "all")
    assert len(doc["modules"]) == 4 * 11
    for module in doc["modules"]:
        assert module["status"] == "compared", module["name"]
        assert module["cosine"] == 1.0, module["name"]
        assert module["rel_error"] == 0.0, module["name"]
        assert module["max_abs_diff"] == 0.0, module["name"]
        assert module["exceeds"] is False
    assert doc["first_exceeding"] is None


def test_8bit_against_none_is_close_but_not_equal_on_every_linear_layer(cli) -> None:
    filters = [arg for name in LINEARS for arg in ("--filter", f"*.{name}")]
    doc = compare_json(cli, "--quant", "8bit", "--against", "none", "--layer", "all", *filters)
    names = [m["name"] for m in doc["modules"]]
    assert len(names) == 4 * len(LINEARS)
    assert {n.rsplit(".", 1)[-1] for n in names} == set(LINEARS)
    for module in doc["modules"]:
        assert module["type"] == "Linear8bitLt", module["name"]
        assert 0.0 < module["rel_error"] < 0.05, module["name"]
        assert 0.999 < module["cosine"] < 1.0, module["name"]
        assert module["max_abs_diff"] > 0.0, module["name"]
        assert module["exceeds"] is False
    assert doc["first_exceeding"] is None


def test_first_module_above_the_tolerance_is_the_first_to_finish(cli) -> None:
    doc = compare_json(cli, "--layer", "0", "--tolerance", "0.005")
    for module in doc["modules"]:
        assert module["exceeds"] is (module["rel_error"] > 0.005)
    # The layer itself starts first but finishes last; q_proj is where the error shows first.
    assert doc["modules"][0]["exceeds"] is True
    assert doc["first_exceeding"] == "model.decoder.layers.0.self_attn.q_proj"


def test_table_marks_the_first_module_and_names_it(cli) -> None:
    result = cli("compare", SENTENCE, "--model", "tiny", "--layer", "0", "--tolerance", "0.005")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == "model tiny · device cpu · 8bit float16 against none float32 (reference)"
    assert "random weights" in lines[1]
    assert lines[2] == "10 tokens"  # per sentence, under the model line that --file shows once

    def cells(line: str) -> list[str]:
        return [cell.strip() for cell in line.split("│")]

    # The mark is a cell of its own, right after the metrics (no longer the last column).
    q_proj = next(line for line in lines if "FIRST" in cells(line))
    assert "│     q_proj " in q_proj  # under self_attn, in the tree of names
    assert any("over" in cells(line) for line in lines)
    summary = next(line for line in lines if line.startswith("first module above"))
    assert summary.startswith(
        "first module above the tolerance 0.005: model.decoder.layers.0.self_attn.q_proj "
        "(relative error 0.0"
    )


def test_table_without_any_module_above_the_tolerance(cli) -> None:
    result = cli("compare", SENTENCE, "--model", "tiny", "--against", "8bit")
    assert result.code == 0, result.err
    assert "no module's relative error exceeds the tolerance 0.05" in result.out
    assert "FIRST" not in result.out


def test_reference_model_is_freed_before_the_other_setting_loads() -> None:
    models: list[weakref.ref] = []
    alive_at_load: list[bool] = []

    def load(quant: str, dtype: str):
        gc.collect()
        alive_at_load.append(any(ref() is not None for ref in models))
        loaded = load_model("tiny", quant=quant, dtype=dtype, device="cpu")
        models.append(weakref.ref(loaded.model))
        return loaded

    result = compare_settings(
        load, SENTENCE, setting=Setting("8bit", "auto"), reference=Setting("none", "auto")
    )
    assert alive_at_load == [False, False]
    assert len(result.modules) == 8


def test_the_same_setting_is_loaded_once() -> None:
    calls: list[tuple[str, str]] = []

    def load(quant: str, dtype: str):
        calls.append((quant, dtype))
        return load_model("tiny", quant=quant, dtype=dtype, device="cpu")

    # auto and float16 resolve to the same dtype for an 8-bit model.
    result = compare_settings(
        load, SENTENCE, setting=Setting("8bit", "float16"), reference=Setting("8bit", "auto")
    )
    assert calls == [("8bit", "auto")]
    assert all(m.rel_error == 0.0 for m in result.modules)


def test_compare_tensors_definitions() -> None:
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert compare_tensors(a, a.clone()).tolist() == [1.0, 0.0, 0.0]
    b = torch.tensor([3.0, 4.0])
    cosine, rel, max_abs = compare_tensors(torch.tensor([3.0, 5.0]), b).tolist()
    assert rel == pytest.approx(1 / 5) and max_abs == 1.0
    assert cosine == pytest.approx(29 / (5 * math.sqrt(34)))
    cosine, rel, max_abs = compare_tensors(torch.tensor([-4.0, 3.0]), b).tolist()
    assert cosine == pytest.approx(0.0, abs=1e-7)
    # float16 outputs are read in float32.
    half = compare_tensors(b.half(), b)
    assert half.dtype == torch.float32 and half.tolist() == [1.0, 0.0, 0.0]
    zeros = torch.zeros(2)
    assert compare_tensors(zeros, zeros.clone()).tolist() == [1.0, 0.0, 0.0]
    assert all(math.isnan(v) for v in compare_tensors(b, zeros).tolist()[:2])
    nan = compare_tensors(torch.tensor([float("nan"), 1.0]), b).tolist()
    assert all(math.isnan(v) for v in nan)


def test_undefined_error_exceeds_the_tolerance() -> None:
    from optinspect.analyses.compare import _diff_rows
    from optinspect.results.records import ModuleRecord

    record = ModuleRecord(0, "lm_head", "Linear", None, 0, 0, "tensor", (1,), "float32", "cpu",
                          None, None, None)  # fmt: skip
    nan = float("nan")
    rows = _diff_rows(
        [record], [record], {("lm_head", 0): torch.tensor([nan, nan, 1.0])}, set(), 1.0
    )
    assert rows[0].exceeds is True and rows[0].rel_error is None and rows[0].max_abs_diff == 1.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--tolerance=-1",), "--tolerance must be a finite number of at least 0, not -1.0"),
        (("--tolerance", "nan"), "--tolerance must be a finite number of at least 0, not nan"),
        (("--layer", "9"), "layer 9 does not exist: the model has layers 0-3"),
        (("--layer", "3-"), "cannot read layer spec '3-': use N, N-M, N,M, -1 or all"),
        (("--filter", "*.nothing"), "no module matches --filter *.nothing"),
    ],
)
def test_usage_errors_exit_2(cli, args: tuple[str, ...], message: str) -> None:
    result = cli("compare", SENTENCE, "--model", "tiny", *args)
    assert result.code == 2
    assert result.err.splitlines()[0] == f"Error: {message}"
    assert result.out == ""


def test_bad_choice_names_the_option_the_value_and_the_choices(cli) -> None:
    # click words this sentence, differently across its versions; check what it names.
    result = cli("compare", SENTENCE, "--model", "tiny", "--against", "3bit")
    assert (result.code, result.out) == (2, "")
    first = result.err.splitlines()[0]
    assert first.startswith("Error: ")
    for word in ("--against", "3bit", "8bit", "4bit", "none"):
        assert word in first, word


def test_empty_text_exits_2(cli) -> None:
    result = cli("compare", "  ", "--model", "tiny")
    assert result.code == 2
    assert result.err == "Error: the text is empty: give at least one word to compare\n"
