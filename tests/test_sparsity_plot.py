"""FFN sparsity in the trace summary, and ``trace --plot``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from conftest import TINY
from optinspect.analyses.sparsity import FfnSparsity
from optinspect.analyses.trace import iter_trace

SENTENCES = ["Hello world", "The quick brown fox jumps over the lazy dog", "The capital of France"]


def manual_sparsity(model, tokenizer, texts: list[str], run) -> tuple[list[float], list[int]]:
    """Zeros fraction and dead units per layer over the real tokens, by direct hooks.

    The hooks watch the forward passes ``run()`` makes, so they see exactly the
    tensors the tracker sees: a ReLU output near zero can flip between 0 and a tiny
    positive value when the batch shape (and so float rounding) changes, which
    would make a count from separate runs differ by a unit or two on some CPUs.
    Padding is excluded here independently of the tracker: batches are right-padded,
    so sentence b of a forward keeps its first len(tokens of b) positions.
    """
    layers = model.model.decoder.layers
    zeros = [0] * len(layers)
    total = [0] * len(layers)
    alive = [torch.zeros(layer.fc1.out_features, dtype=torch.bool) for layer in layers]
    lengths = iter(len(tokenizer(t)["input_ids"]) for t in texts)
    batch: list[int] = []

    def start(module, args, kwargs) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        batch[:] = [next(lengths) for _ in range(ids.shape[0])]

    def hook(module, args, output, i: int) -> None:
        rows = output.reshape(len(batch), -1, output.shape[-1])
        for b, n in enumerate(batch):
            real = rows[b, :n]
            zeros[i] += int((real == 0).sum())
            total[i] += real.numel()
            alive[i] |= (real != 0).any(dim=0)

    handles = [model.register_forward_pre_hook(start, with_kwargs=True)]
    for i, layer in enumerate(layers):
        handles.append(
            layer.activation_fn.register_forward_hook(lambda m, a, o, i=i: hook(m, a, o, i))
        )
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return [z / t for z, t in zip(zeros, total, strict=True)], [int((~a).sum()) for a in alive]


@pytest.mark.parametrize("batch_size", [1, 3])
def test_sparsity_matches_direct_hooks_and_ignores_padding(load_tiny, batch_size: int) -> None:
    loaded = load_tiny("none")
    tracker = FfnSparsity(loaded.model)

    def run() -> None:
        list(iter_trace(loaded, SENTENCES, batch_size=batch_size, sparsity=tracker))

    zeros, dead = manual_sparsity(loaded.model, loaded.tokenizer, SENTENCES, run)
    summary = tracker.summary()
    assert [row.layer for row in summary] == [0, 1, 2, 3]
    # Same tensors on both sides, so the counts agree exactly on any machine.
    assert [row.zeros for row in summary] == pytest.approx(zeros, abs=1e-12)
    assert [row.dead for row in summary] == dead
    assert summary[0].tokens == sum(len(loaded.tokenizer(t)["input_ids"]) for t in SENTENCES)


def test_sparsity_hooks_are_removed(load_tiny) -> None:
    model = load_tiny("none").model
    act = model.model.decoder.layers[0].activation_fn
    with FfnSparsity(model):
        assert len(act._forward_hooks) == 1
    assert len(act._forward_hooks) == 0


def test_json_summary_agrees_with_the_activation_records(cli) -> None:
    result = cli("trace", SENTENCES[1], "--model", "tiny", "-q", "none", "-f", "json", "-l", "all")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    per_module = {
        m["layer"]: m["stats"]["zeros"]
        for m in doc["modules"]
        if m["name"].endswith(".activation_fn")
    }
    assert {row["layer"]: row["zeros"] for row in doc["ffn"]} == pytest.approx(per_module)


def test_table_shows_dead_units_only_for_several_sentences(cli, tmp_path: Path) -> None:
    one = cli("trace", "Hello world", "--model", "tiny", "-q", "none")
    assert "FFN sparsity after activation_fn" in one.out and "dead units" not in one.out
    path = tmp_path / "s.txt"
    path.write_text("\n".join(SENTENCES), encoding="utf-8")
    many = cli("trace", "--file", str(path), "--model", "tiny", "-q", "none")
    assert many.code == 0, many.err
    assert "dead units" in many.out and "/256" in many.out


def test_plot_writes_a_png_of_the_expected_size(cli, tmp_path: Path) -> None:
    image = pytest.importorskip("matplotlib.image")
    target = tmp_path / "layers.png"
    result = cli("trace", "Hello world", "--model", "tiny", "-q", "none", "--plot", str(target))
    assert result.code == 0, result.err
    pixels = image.imread(str(target))
    assert pixels.shape[:2] == (900, 800)
    assert pixels.std() > 0  # something was drawn


def test_plot_needs_layer_outputs(cli, tmp_path: Path) -> None:
    result = cli(
        "trace", "Hi", "--model", "tiny", "-q", "none", "--filter", "*.fc1",
        "--plot", str(tmp_path / "p.png"),
    )  # fmt: skip
    assert result.code == 2
    assert result.err == (
        "Error: --plot needs the decoder layers' outputs: use it without --filter, "
        "or with --layer all\n"
    )


def test_plot_path_is_checked_before_the_model_loads(cli, monkeypatch, tmp_path: Path) -> None:
    import optinspect.commands.common as common

    def never(*args, **kwargs):
        raise AssertionError("the model must not load")

    monkeypatch.setattr(common, "load_with_status", never)
    target = tmp_path / "missing" / "p.png"
    result = cli("trace", "Hi", "--model", "tiny", "--plot", str(target))
    assert result.code == 2
    assert result.err == f"Error: cannot write {target}: folder {target.parent} does not exist\n"


def test_ffn_sparsity_table_lists_only_the_chosen_layer(cli, sentences_file: Path) -> None:
    result = cli("trace", "--file", str(sentences_file), *TINY, "--layer", "0")
    assert result.code == 0, result.err
    out = result.out
    assert out.count("model tiny · quant none") == 1  # the model line once, not per sentence
    sparsity = out[out.index("FFN sparsity") :]
    layer_cells = re.findall(r"^│\s+(\d+)\s+│", sparsity, flags=re.MULTILINE)
    assert layer_cells == ["0"]


def test_ffn_sparsity_in_json_lists_only_the_chosen_layer(cli, sentences_file: Path) -> None:
    out = cli("trace", "--file", str(sentences_file), *TINY, "--layer", "0", "-f", "json").out
    assert [row["layer"] for row in json.loads(out)["ffn"]] == [0]
