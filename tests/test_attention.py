"""``optinspect attention``: weights, entropy, sink, the PNG, the terminal heatmap and errors."""

from __future__ import annotations

import io
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from rich.console import Console

from conftest import RESULT_HEAD, json_of
from optinspect.analyses.attention import (
    compute_attention,
    head_entropy,
    sink_mass,
    uniform_entropy,
)
from optinspect.errors import ModelError
from optinspect.model.loading import load_model
from optinspect.render.attention import attention_heatmap, attention_page, render_attention
from optinspect.render.images import DPI, heatmap_inches
from optinspect.render.page import Heatmap, Sheet, Style
from optinspect.render.terminal import heatmap_blocks

SENTENCE = "The quick brown fox jumps over the lazy dog"
TOKENS = 10  # </s> and nine words in the tiny tokenizer


def attention_json(cli, *args: str) -> dict:
    return json_of(cli, "attention", SENTENCE, "--model", "tiny", *args)


def manual_entropy(rows: list[list[float]]) -> float:
    return sum(-sum(w * math.log(w) for w in row if w > 0) for row in rows) / len(rows)


def manual_sink(rows: list[list[float]]) -> float:
    return sum(row[0] for row in rows) / len(rows)


@pytest.fixture(scope="module")
def eager_tiny():
    return load_model("tiny", quant="none", device="cpu", attn_implementation="eager")


@pytest.mark.parametrize(("quant", "tol"), [("none", 1e-5), ("8bit", 2e-3)])
def test_one_head_is_causal_and_rows_sum_to_one(cli, quant: str, tol: float) -> None:
    doc = attention_json(cli, "--quant", quant, "--layer", "2", "--head", "1")
    assert (doc["layer"], doc["head"], doc["num_heads"]) == (2, 1, 4)
    assert len(doc["tokens"]) == TOKENS and doc["tokens"][0] == {"id": 2, "text": "</s>"}
    weights = doc["weights"]
    assert len(weights) == TOKENS and all(len(row) == TOKENS for row in weights)
    for i, row in enumerate(weights):
        assert sum(row) == pytest.approx(1.0, abs=tol)
        assert all(w == 0.0 for w in row[i + 1 :]), f"query {i} attends to a later key"
        assert all(w >= 0.0 for w in row)
    shown = doc["heads"][1]
    assert shown["head"] == 1
    assert shown["sink"] == pytest.approx(manual_sink(weights), abs=1e-6)
    assert shown["entropy"] == pytest.approx(manual_entropy(weights), abs=1e-5)


def test_json_layout(cli) -> None:
    doc = attention_json(cli, "--quant", "none", "--layer", "-1")
    assert set(doc) == RESULT_HEAD | {
        "text",
        "tokens",
        "layer",
        "head",
        "num_heads",
        "weights",
        "heads",
        "uniform_entropy",
    }
    assert doc["schema"] == 1 and doc["layer"] == 3 and doc["head"] is None
    assert [h["head"] for h in doc["heads"]] == [0, 1, 2, 3]
    assert all(set(h) == {"head", "entropy", "sink"} for h in doc["heads"])
    assert doc["uniform_entropy"] == pytest.approx(
        sum(math.log(i + 1) for i in range(TOKENS)) / TOKENS
    )


def test_every_head_against_the_models_own_weights(eager_tiny) -> None:
    ids = eager_tiny.tokenizer(SENTENCE, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        heads = eager_tiny.model(input_ids=ids, use_cache=False, output_attentions=True)
    expected = heads.attentions[1][0]  # [heads, query, key]
    mean = compute_attention(eager_tiny, SENTENCE, layer=1)
    assert mean.head is None
    assert torch.allclose(torch.tensor(mean.weights), expected.mean(dim=0), atol=1e-6)
    for h in range(4):
        result = compute_attention(eager_tiny, SENTENCE, layer=1, head=h)
        rows = [list(row) for row in result.weights]
        assert torch.allclose(torch.tensor(rows), expected[h], atol=1e-6)
        summary = result.heads[h]
        assert summary.sink == pytest.approx(manual_sink(rows), abs=1e-6)
        assert summary.entropy == pytest.approx(manual_entropy(rows), abs=1e-5)
    assert compute_attention(eager_tiny, SENTENCE, layer=1, head=-1).head == 3


def test_entropy_and_sink_of_known_patterns() -> None:
    size = 5
    uniform = torch.tril(torch.ones(size, size))
    uniform = uniform / uniform.sum(dim=-1, keepdim=True)
    itself = torch.eye(size)
    sink_only = torch.zeros(size, size)
    sink_only[:, 0] = 1.0
    weights = torch.stack([uniform, itself, sink_only])
    assert head_entropy(weights).tolist() == pytest.approx([uniform_entropy(size), 0.0, 0.0])
    assert sink_mass(weights).tolist() == pytest.approx(
        [sum(1 / (i + 1) for i in range(size)) / size, 1 / size, 1.0]
    )


def test_post_layernorm_model(cli, opt350m_like: Path) -> None:
    result = cli(
        "attention", SENTENCE, "--model", str(opt350m_like), "--quant", "none", "--format", "json"
    )
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert doc["layer"] == 1 and len(doc["heads"]) == 4
    assert all(sum(row) == pytest.approx(1.0, abs=1e-5) for row in doc["weights"])


def test_png_is_written_at_the_documented_size(cli, tmp_path: Path) -> None:
    image_path = tmp_path / "attn.png"
    result = cli(
        "attention", SENTENCE, "--model", "tiny", "--layer", "3", "--head", "2",
        "--png", str(image_path),
    )  # fmt: skip
    assert result.code == 0, result.err
    assert f"wrote {image_path}" in result.err
    from matplotlib.image import imread

    pixels = imread(image_path)
    width, height = heatmap_inches(TOKENS, TOKENS)
    assert pixels.shape[:2] == (int(height * DPI), int(width * DPI)) == (600, 600)
    assert pixels.std() > 0  # not a blank canvas


def test_png_without_matplotlib_says_how_to_install_it(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    image_path = tmp_path / "attn.png"
    result = cli("attention", SENTENCE, "--model", "tiny", "--png", str(image_path))
    assert (result.code, result.out) == (1, "")
    assert result.err.splitlines()[0] == (
        "Error: --png needs matplotlib, which is not installed: run pip install 'optinspect[plot]'"
    )
    assert not image_path.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--layer", "9"], "layer 9 does not exist: the model has layers 0-3"),
        (["--layer", "-5"], "layer -5 does not exist: the model has layers 0-3"),
        (["--layer", "0-2"], "--layer 0-2 names 3 layers: give exactly one"),
        (["--head", "4"], "head 4 does not exist: the model has heads 0-3"),
        (["--head", "-5"], "head -5 does not exist: the model has heads 0-3"),
        (["--png", "no/such/folder/a.png"], "cannot write no/such/folder/a.png: "
         "folder no/such/folder does not exist"),
    ],
)  # fmt: skip
def test_usage_errors(cli, args: list[str], message: str) -> None:
    result = cli("attention", SENTENCE, "--model", "tiny", *args)
    assert (result.code, result.out) == (2, "")
    assert result.err == f"Error: {message}\n"


def test_a_model_without_eager_attention_is_refused(load_tiny) -> None:
    with pytest.raises(ModelError, match="returned no attention weights"):
        compute_attention(load_tiny("none"), SENTENCE, layer=0)


def test_table_when_piped_prints_numbers_without_colour(cli) -> None:
    result = cli("attention", SENTENCE, "--model", "tiny", "--quant", "none", "--head", "0")
    assert result.code == 0, result.err
    assert "\x1b[" not in result.out
    lines = result.out.splitlines()
    assert "attention of layer 3, head 0: weights in percent, rows query, columns key" in lines
    row0 = next(line for line in lines if line.startswith('0 "</s>"'))
    assert row0.split()[-1] == "100"
    assert "*: the head shown above" in lines
    assert any(line.startswith("entropy: mean over query rows") for line in lines)


def render(result, **console_args) -> str:
    buffer = io.StringIO()
    render_attention(Console(file=buffer, **console_args), result)
    return buffer.getvalue()


def test_colour_only_on_a_colour_terminal(eager_tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    result = compute_attention(eager_tiny, SENTENCE, layer=0)
    coloured = render(result, width=120, force_terminal=True, color_system="truecolor")
    assert "48;2;" in coloured  # truecolor backgrounds
    monkeypatch.setenv("NO_COLOR", "1")
    plain = render(result, width=120, force_terminal=True, color_system="truecolor")
    assert "48;2;" not in plain
    assert " 100" in plain


def test_narrow_console_splits_keys_instead_of_dropping_them(eager_tiny) -> None:
    result = compute_attention(eager_tiny, SENTENCE, layer=0, head=0)
    blocks = heatmap_blocks(attention_heatmap(result), 30, colour=False)
    assert len(blocks) > 1
    headers = [block.plain.splitlines()[0].split()[1:] for block in blocks]
    assert [int(key) for header in headers for key in header] == list(range(TOKENS))
    for block in blocks:
        assert all(len(line) <= 30 for line in block.plain.splitlines())
        first_key = int(block.plain.splitlines()[0].split()[1])
        # A block starting at key k has the queries k.. only; each row reaches its diagonal.
        assert block.plain.splitlines()[1].split()[0] == str(first_key)


def test_page_holds_the_token_by_token_heatmap_of_the_record(eager_tiny) -> None:
    result = compute_attention(eager_tiny, SENTENCE, layer=0, head=2)
    page = attention_page(result)
    (heatmap,) = [part for part in page.parts if isinstance(part, Heatmap)]
    # Rows are queries and columns keys, one per token: the record's weights as they are.
    assert len(heatmap.rows) == len(heatmap.columns) == len(result.tokens) == TOKENS
    assert [len(row) for row in heatmap.values] == [TOKENS] * TOKENS
    assert heatmap.values == result.weights
    assert heatmap.causal and heatmap.percent and heatmap.terminal
    assert (heatmap.low, heatmap.high) == (0.0, 1.0)
    assert page.data == result.as_dict()
    (heads,) = [part for part in page.parts if isinstance(part, Sheet)]
    assert len(heads.rows) == result.num_heads
    assert [style is Style.marked for style in heads.row_styles] == [
        h == 2 for h in range(result.num_heads)
    ]
