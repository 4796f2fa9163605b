"""``optinspect lens``: the last layer is the model's own prediction; errors, JSON and tables."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
import torch
from rich.console import Console

from conftest import fresh_run, json_of
from optinspect.analyses.lens import compute_lens, project_hidden, rank_top_k
from optinspect.model.loading import load_model
from optinspect.render.lens import render_lens

SENTENCE = "The capital of France is"


def lens_json(cli, *args: str) -> dict:
    return json_of(cli, "lens", SENTENCE, *args)


def model_argmax(loaded, text: str) -> list[int]:
    """The model's own next-token prediction at every position, straight from its logits."""
    ids = loaded.tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        logits = loaded.model(input_ids=ids, use_cache=False).logits
    return logits[0].argmax(dim=-1).tolist()


def top1(predictions: list[list[dict]]) -> list[int]:
    return [ranked[0]["id"] for ranked in predictions]


@pytest.fixture(scope="module")
def post_ln(opt350m_like: Path):
    return load_model(str(opt350m_like), quant="none", device="cpu")


@pytest.mark.parametrize("quant", ["none", "8bit"])
def test_last_layer_is_the_models_prediction_on_tiny(cli, load_tiny, quant: str) -> None:
    doc = lens_json(cli, "--model", "tiny", "--quant", quant)
    assert [layer["layer"] for layer in doc["layers"]] == [0, 1, 2, 3]
    expected = model_argmax(load_tiny(quant), SENTENCE)
    assert top1(doc["layers"][-1]["predictions"]) == expected
    assert top1(doc["output"]) == expected


def test_last_layer_is_the_models_prediction_post_layernorm(cli, post_ln, opt350m_like) -> None:
    decoder = post_ln.model.model.decoder
    assert decoder.final_layer_norm is None and decoder.project_out is not None
    doc = lens_json(cli, "--model", str(opt350m_like), "--quant", "none")
    assert [layer["layer"] for layer in doc["layers"]] == [0, 1]
    assert top1(doc["layers"][-1]["predictions"]) == model_argmax(post_ln, SENTENCE)


@pytest.mark.parametrize("which", ["tiny", "post_ln"])
def test_projecting_the_last_layer_reproduces_the_logits_exactly(
    which: str, load_tiny, post_ln
) -> None:
    loaded = load_tiny("none") if which == "tiny" else post_ln
    model = loaded.model
    ids = loaded.tokenizer(SENTENCE, return_tensors="pt")["input_ids"]
    kept: list[torch.Tensor] = []
    handle = model.model.decoder.layers[-1].register_forward_hook(
        lambda _m, _a, out: kept.append(out)
    )
    try:
        with torch.inference_mode():
            logits = model(input_ids=ids, use_cache=False).logits
            projected = project_hidden(model, kept[0])
    finally:
        handle.remove()
    assert torch.equal(projected, logits)


def test_top_k_gives_ranked_probabilities(cli) -> None:
    doc = lens_json(cli, "--model", "tiny", "--quant", "none", "--top-k", "3", "--layer", "1,3")
    assert doc["top_k"] == 3
    assert [layer["layer"] for layer in doc["layers"]] == [1, 3]
    assert len(doc["tokens"]) == 6 and doc["tokens"][0] == {"id": 2, "text": "</s>"}
    for layer in doc["layers"]:
        assert len(layer["predictions"]) == len(doc["tokens"])
        for ranked in layer["predictions"]:
            assert len(ranked) == 3
            # "bytes" joins them for a token that is a piece of a character.
            assert {"id", "text", "prob"} <= set(ranked[0]) <= {"id", "text", "prob", "bytes"}
            probs = [p["prob"] for p in ranked]
            assert probs == sorted(probs, reverse=True)
            assert all(0 < p <= 1 for p in probs) and sum(probs) <= 1 + 1e-6
    assert top1(doc["layers"][-1]["predictions"]) == top1(doc["output"])


def test_json_header(cli) -> None:
    doc = lens_json(cli, "--model", "tiny", "--quant", "none")
    assert doc["schema"] == 1
    assert (doc["model"], doc["quant"], doc["device"], doc["dtype"]) == (
        "tiny",
        "none",
        "cpu",
        "float32",
    )
    assert doc["random_weights"] is True and doc["text"] == SENTENCE and doc["top_k"] == 1


def test_rank_top_k_breaks_ties_like_argmax() -> None:
    logits = torch.tensor(
        [[1.0, 3.0, 3.0, 0.0], [5.0, 5.0, 5.0, 5.0], [0.0, math.nan, 2.0, math.nan]]
    )
    assert rank_top_k(logits, 2) == [[1, 2], [0, 1], [1, 3]]
    assert [row[0] for row in rank_top_k(logits, 1)] == logits.argmax(dim=-1).tolist()


def test_hooks_are_removed_even_when_the_forward_fails(load_tiny) -> None:
    loaded = load_tiny("none")
    layers = loaded.model.model.decoder.layers
    before = [len(layer._forward_hooks) for layer in layers]

    def boom(*_: object) -> None:
        raise RuntimeError("boom")

    handle = layers[2].register_forward_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            compute_lens(loaded, SENTENCE)
    finally:
        handle.remove()
    assert [len(layer._forward_hooks) for layer in layers] == before
    compute_lens(loaded, SENTENCE)
    assert [len(layer._forward_hooks) for layer in layers] == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--layer", "9"], "layer 9 does not exist: the model has layers 0-3"),
        (["--layer", "3-"], "cannot read layer spec '3-': use N, N-M, N,M, -1 or all"),
        (["--top-k", "0"], "--top-k must be at least 1, not 0"),
        (["--top-k", "513"], "--top-k 513 is more than the vocabulary of 512 tokens"),
    ],
)
def test_usage_errors(cli, args: list[str], message: str) -> None:
    result = cli("lens", SENTENCE, "--model", "tiny", *args)
    assert (result.code, result.out) == (2, "")
    assert result.err == f"Error: {message}\n"


def test_empty_text(cli) -> None:
    result = cli("lens", "  ", "--model", "tiny")
    assert result.code == 2
    # The message names the command it belongs to, not trace's verb.
    assert (
        result.err == "Error: the text is empty: give at least one word to read through the lens\n"
    )


#: An id the fixture's embedding matrix has and its tokenizer (the tiny one, 512 tokens) lacks.
PAST_VOCAB = 515


def _predict_past_the_vocabulary(model) -> None:
    # The final layer norm turns every hidden state into ones, and lm_head's row
    # PAST_VOCAB is the only one that sums high: every layer's top-1 is that id.
    decoder = model.model.decoder
    decoder.final_layer_norm.weight.zero_()
    decoder.final_layer_norm.bias.fill_(1.0)
    model.lm_head.weight.mul_(0.01)
    model.lm_head.weight[PAST_VOCAB].fill_(1.0)


@pytest.fixture(scope="module")
def larger_embeddings(make_fixture_model) -> Path:
    """Like real OPT: more embedding rows (520) than the tokenizer has tokens (512)."""
    return make_fixture_model(
        "past-vocab", _predict_past_the_vocabulary, vocab_size=520, tie_word_embeddings=False
    )


def test_ids_past_the_vocabulary_show_as_their_id(cli, larger_embeddings: Path) -> None:
    # They decode to "", which the table showed as `""` and JSON as "": now `<id 515>`.
    args = ("lens", "Hi", "--model", str(larger_embeddings), "-q", "none", "--top-k", "2")
    doc = json.loads(cli(*args, "-f", "json").out)
    first = doc["layers"][0]["predictions"][0][0]
    assert first == {"id": PAST_VOCAB, "text": f"<id {PAST_VOCAB}>", "prob": first["prob"]}
    assert doc["output"][0][0]["text"] == f"<id {PAST_VOCAB}>"
    table = cli(*args).out
    assert f"<id {PAST_VOCAB}>* " in table  # unquoted, as no text decodes to it
    assert '""' not in table


def test_a_token_of_the_vocabulary_is_never_shown_as_an_id(load_tiny) -> None:
    from optinspect.engine.runner import describe_token

    tokenizer = load_tiny("none").tokenizer
    assert describe_token(tokenizer, 511).text == tokenizer.decode([511])
    assert describe_token(tokenizer, 512).text == "<id 512>"


def test_table_when_piped_has_every_layer_and_no_colour(cli) -> None:
    result = cli("lens", SENTENCE, "--model", "tiny", "--quant", "none")
    assert result.code == 0, result.err
    assert "\x1b[" not in result.out
    assert all(f"L{i}" in result.out for i in range(4))
    assert '" France"' in result.out
    assert "*: already the model's own prediction at that position" in result.out


def test_narrow_console_splits_layers_instead_of_dropping_them(load_tiny) -> None:
    result = compute_lens(load_tiny("none"), SENTENCE, top_k=2)
    buffer = io.StringIO()
    render_lens(Console(file=buffer, width=60), result)
    text = buffer.getvalue()
    assert all(f"L{i}" in text for i in range(4))
    table_lines = [line for line in text.splitlines() if line[:1] in "┏┃┡│├└"]
    assert table_lines and all(len(line) <= 60 for line in table_lines)


def test_colour_marks_matches_in_green(load_tiny) -> None:
    result = compute_lens(load_tiny("none"), SENTENCE)
    buffer = io.StringIO()
    render_lens(
        Console(file=buffer, width=120, force_terminal=True, color_system="truecolor"), result
    )
    assert "\x1b[1;32m" in buffer.getvalue()
    assert "green: already the model's own prediction" in buffer.getvalue()


def test_help_does_not_import_torch() -> None:
    fresh = fresh_run(["lens", "--help"], ["attention", "--help"])
    assert fresh.code == 0, fresh.err
    assert fresh.out.count("Examples:") == 2
    assert fresh.heavy == []


def _nan_head(model) -> None:
    model.model.decoder.final_layer_norm.weight.fill_(float("nan"))


def test_lens_with_nonfinite_logits_predicts_nothing(cli, make_fixture_model) -> None:
    # A NaN final layer norm makes every position's logits NaN; a NaN ranks first in
    # argmax, so without care the lens would show token 0 (or 1) as a prediction.
    folder = make_fixture_model("nan-norm", mutate=_nan_head)
    args = ("lens", "Hello world", "--model", str(folder), "-q", "none", "--top-k", "2")
    data = json.loads(cli(*args, "-f", "json").out)
    assert data["output"] and all(ranked == [] for ranked in data["output"])
    for layer in data["layers"]:
        assert all(ranked == [] for ranked in layer["predictions"])
    table = cli(*args).out
    assert "(not finite)" in table
    # No cell names token 0 or 1 (<s>, <pad>) as a prediction.
    assert '"<s>"' not in table
    assert '"<pad>"' not in table
