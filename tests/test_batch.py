"""Many sentences through one model: stdin and files, padding, JSONL/CSV, --save, exit 3, API."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from optinspect import trace
from optinspect.tracing import iter_trace

SENTENCES = ["Hello world", "The quick brown fox jumps over the lazy dog", "The capital of France"]


def feed_stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


def jsonl(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def test_stdin_one_sentence_per_line_blank_lines_skipped(cli, monkeypatch) -> None:
    feed_stdin(monkeypatch, b"Hello world\n\n   \nThe quick brown fox\r\n")
    result = cli("trace", "-", "--model", "tiny", "-q", "none", "--format", "jsonl")
    assert result.code == 0, result.err
    docs = jsonl(result.out)
    assert [d["text"] for d in docs] == ["Hello world", "The quick brown fox"]
    assert [d["index"] for d in docs] == [0, 1]
    assert all(d["schema"] == 1 for d in docs)


def test_file_input_and_json_results_document(cli, tmp_path: Path) -> None:
    path = tmp_path / "s.txt"
    path.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    result = cli("trace", "--file", str(path), "--model", "tiny", "-q", "none", "-f", "json")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert doc["schema"] == 1 and doc["model"] == "tiny"
    assert [r["text"] for r in doc["results"]] == SENTENCES


def test_invalid_utf8_on_stdin(cli, monkeypatch) -> None:
    feed_stdin(monkeypatch, b"fine\n\xff\xfe bad\n")
    result = cli("trace", "-", "--model", "tiny", "-q", "none", "-f", "jsonl")
    assert result.code == 2
    assert result.err == "Error: line 2 of stdin is not valid UTF-8 (byte 1)\n"


def test_text_and_file_together(cli, tmp_path: Path) -> None:
    result = cli("trace", "hi", "--file", str(tmp_path / "x.txt"), "--model", "tiny")
    assert (result.code, result.err) == (2, "Error: give TEXT or --file, not both\n")


def test_empty_input_traces_nothing(cli, monkeypatch) -> None:
    feed_stdin(monkeypatch, b"\n\n")
    result = cli("trace", "-", "--model", "tiny", "-q", "none", "-f", "csv")
    assert result.code == 0
    assert result.out.count("\n") == 1  # the header alone
    assert "no sentences" in result.err


#: How far a module's output may move between a sentence alone and in a padded batch,
#: as a fraction of the output's absmax. Padding changes matmul shapes and so the
#: order of float additions. float32: Higham's worst-case bound for a K-term dot
#: product is K*u = 256 * 6e-8 = 1.5e-5 (K = ffn 256), compounded over 4 layers: 1e-4
#: (measured: 5e-7). 8bit: LLM.int8 rounds activations and weights to steps of 1/127
#: of a row's absmax and picks its outlier columns over the whole batch, padding rows
#: included, so the two runs round differently by a few such steps: 5e-2 (measured:
#: 1.5e-2 on an AMD EPYC). The bugs guarded against (another sentence's tokens, padding
#: mixed into a sentence) move outputs by about their own size.
OUTPUT_DRIFT = {"none": 1e-4, "8bit": 5e-2}


def traced_with_outputs(model, texts: list[str], batch_size: int):
    """Results and every module's output per sentence (as if alone), in float64."""
    kept: dict[tuple[int, str, int], torch.Tensor] = {}

    def sink(index: int, name: str, call: int, tensor: torch.Tensor) -> None:
        kept[index, name, call] = tensor.detach().to(torch.float64).clone()

    results = list(iter_trace(model, texts, layers="all", batch_size=batch_size, sink=sink))
    return results, kept


def assert_stats_within_rounding(a, b, x: torch.Tensor, y: torch.Tensor) -> None:
    """a, b: statistics of x, y (one module's output alone and in a batch).

    Each statistic moves by no more than the difference of the tensors allows: mean by
    at most mean|x-y|; std and rms by at most rms(x-y) (both are norms up to a constant
    factor, and a norm is 1-Lipschitz); min, max, absmax by at most max|x-y|. Each side
    also carries the float32 reduction error test_stats.py bounds (rel 1e-5, 1e-6 of the
    absmax). The count of exact zeros changes only where an element is zero in one run
    and not the other; the other value then lies within max|x-y| of zero, so the change
    is at most the number of nonzero elements that close to zero, in either run. After
    the ReLU (activation_fn) those are the units on the edge of firing; elsewhere a
    float16 output can round to exactly zero, and the same bound covers it.
    """
    diff = (x - y).abs()
    drift = float(diff.max())
    scale = max(float(x.abs().max()), float(y.abs().max()))
    moves = {"mean": float(diff.mean()), "std": float(diff.square().mean().sqrt())}
    moves.update(rms=moves["std"], min=drift, max=drift, absmax=drift)
    sa, sb = a.stats.as_dict(), b.stats.as_dict()
    for key, move in moves.items():
        slack = 2 * (1e-5 * abs(sa[key]) + 1e-6 * scale)
        assert abs(sb[key] - sa[key]) <= move + slack, (a.name, key, sa[key], sb[key], move)
    near_zero = int(((x != 0) & (x.abs() <= drift)).sum() + ((y != 0) & (y.abs() <= drift)).sum())
    n = x.numel()
    zeros_a, zeros_b = round(sa["zeros"] * n), round(sb["zeros"] * n)
    assert zeros_a == int((x == 0).sum()) and zeros_b == int((y == 0).sum()), a.name
    assert abs(zeros_b - zeros_a) <= near_zero, (a.name, "zeros", zeros_a, zeros_b, near_zero)
    assert (sa["nan"], sa["inf"]) == (sb["nan"], sb["inf"]) == (0, 0), a.name


@pytest.mark.parametrize("quant", ["none", "8bit"])
def test_statistics_are_the_same_alone_and_in_a_padded_batch(load_tiny, quant: str) -> None:
    model = load_tiny(quant)
    batched, batched_outputs = traced_with_outputs(model, SENTENCES, batch_size=3)
    for i, text in enumerate(SENTENCES):
        (alone,), alone_outputs = traced_with_outputs(model, [text], batch_size=1)
        assert [m.name for m in alone.modules] == [m.name for m in batched[i].modules]
        for a, b in zip(alone.modules, batched[i].modules, strict=True):
            assert a.shape == b.shape, a.name
            x, y = alone_outputs[0, a.name, a.call], batched_outputs[i, b.name, b.call]
            assert x.shape == y.shape, a.name
            drift = float((x - y).abs().max())
            assert drift <= OUTPUT_DRIFT[quant] * float(x.abs().max()), (a.name, drift)
            assert_stats_within_rounding(a, b, x, y)


def test_jsonl_streams_before_the_last_batch_runs(cli, monkeypatch, load_tiny) -> None:
    import optinspect.commands.common as common

    model = load_tiny("none")
    monkeypatch.setattr(common, "load_with_status", lambda *a, **k: model)
    forwards: list[int] = []
    handle = model.model.register_forward_pre_hook(lambda *a: forwards.append(1))
    seen_at_first_write: list[int] = []

    class Spy(io.StringIO):
        def write(self, text: str) -> int:
            if not seen_at_first_write:
                seen_at_first_write.append(len(forwards))
            return super().write(text)

    feed_stdin(monkeypatch, ("\n".join(SENTENCES) + "\n").encode())
    spy = Spy()
    monkeypatch.setattr(sys, "stdout", spy)
    try:
        from optinspect.cli import run

        code = run(["trace", "-", "--model", "tiny", "-f", "jsonl", "--batch-size", "1"])
    finally:
        handle.remove()
    assert code == 0
    assert len(forwards) == 3
    assert seen_at_first_write == [1]
    assert len(spy.getvalue().splitlines()) == 3


def test_csv_columns_and_rows(cli, tmp_path: Path) -> None:
    path = tmp_path / "s.txt"
    path.write_text("\n".join(SENTENCES[:2]), encoding="utf-8")
    result = cli(
        "trace", "--file", str(path), "--model", "tiny", "-q", "none", "--layer", "all",
        "--format", "csv", "--stats", "zeros,mean,absmax",
    )  # fmt: skip
    assert result.code == 0, result.err
    rows = list(csv.DictReader(io.StringIO(result.out)))
    assert list(rows[0]) == [
        "sentence", "text", "index", "module", "type", "layer", "call", "output", "shape",
        "dtype", "device", "weight_dtype", "mean", "absmax", "zeros",
    ]  # fmt: skip
    assert len(rows) == 2 * 4 * 11
    assert rows[0]["module"] == "model.decoder.layers.0" and rows[0]["sentence"] == "0"
    assert rows[-1]["sentence"] == "1" and rows[-1]["text"] == SENTENCES[1]
    fc1 = next(r for r in rows if r["module"].endswith("layers.0.fc1"))
    assert fc1["shape"] == "4x256" and float(fc1["absmax"]) > 0


def test_filter_and_stats_selection(cli) -> None:
    result = cli(
        "trace", "Hello world", "--model", "tiny", "-q", "none", "-f", "json",
        "--filter", "*.fc1", "--filter", "*.fc2", "--layer", "1-2", "--stats", "mean,zeros",
    )  # fmt: skip
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert [m["name"] for m in doc["modules"]] == [
        "model.decoder.layers.1.fc1",
        "model.decoder.layers.1.fc2",
        "model.decoder.layers.2.fc1",
        "model.decoder.layers.2.fc2",
    ]
    assert list(doc["modules"][0]["stats"]) == ["mean", "zeros"]


def test_filter_alone_searches_every_module(cli) -> None:
    doc = json.loads(
        cli("trace", "Hi", "--model", "tiny", "-q", "none", "-f", "json", "--filter", "lm_*").out
    )
    assert [m["name"] for m in doc["modules"]] == ["lm_head"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--filter", "*.nope"], "no module matches --filter *.nope"),
        (
            ["--stats", "mean,median"],
            "unknown statistic 'median': choose from mean, std, min, max, absmax, rms, zeros, "
            "nan, inf",
        ),
        (["--batch-size", "0"], "--batch-size must be at least 1, not 0"),
        (["--tokens", "3"], "--tokens only applies with --dry-run"),
    ],
)
def test_selection_errors(cli, args: list[str], message: str) -> None:
    result = cli("trace", "Hi", "--model", "tiny", "-q", "none", *args)
    assert result.code == 2
    assert result.err == f"Error: {message}\n"


def test_save_round_trip_matches_a_direct_forward(cli, tmp_path: Path, load_tiny) -> None:
    target = tmp_path / "layer3.safetensors"
    texts = tmp_path / "s.txt"
    texts.write_text("\n".join(SENTENCES[:2]), encoding="utf-8")
    result = cli(
        "trace", "--file", str(texts), "--model", "tiny", "-q", "none", "--layer", "3",
        "--save", str(target), "-f", "jsonl",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    model = load_tiny("none")
    with safe_open(str(target), framework="pt") as f:
        keys = set(f.keys())
        meta = f.metadata()
        assert len(keys) == 2 * 11
        for index, text in enumerate(SENTENCES[:2]):
            ids = model.tokenizer(text, return_tensors="pt")["input_ids"]
            assert json.loads(meta[f"{index}/tokens"]) == ids[0].tolist()
            assert meta[f"{index}/text"] == text
            outputs: dict[str, torch.Tensor] = {}
            fc1 = model.model.get_submodule("model.decoder.layers.3.fc1")
            handle = fc1.register_forward_hook(
                lambda m, a, o, seen=outputs: seen.setdefault("fc1", o)
            )
            try:
                with torch.inference_mode():
                    logits = model.model(ids).logits
            finally:
                handle.remove()
            saved = f.get_tensor(f"{index}/model.decoder.layers.3.fc1")
            assert saved.shape == outputs["fc1"].shape
            # Saved from a padded batch of two, compared with this sentence run alone:
            # they differ by float rounding only (OUTPUT_DRIFT says how much and why).
            drift = float((saved - outputs["fc1"]).abs().max())
            assert drift <= OUTPUT_DRIFT["none"] * float(outputs["fc1"].abs().max())
            layer = f.get_tensor(f"{index}/model.decoder.layers.3")
            assert layer.shape == (1, ids.shape[1], 64)
            assert logits.shape[1] == ids.shape[1]


def test_save_refuses_to_overwrite_without_force(cli, tmp_path: Path) -> None:
    target = tmp_path / "out.safetensors"
    target.write_bytes(b"keep me")
    result = cli("trace", "Hi", "--model", "tiny", "--layer", "0", "--save", str(target))
    assert (result.code, result.err) == (
        2,
        f"Error: {target} exists: use --force to overwrite it\n",
    )
    assert target.read_bytes() == b"keep me"
    forced = cli(
        "trace", "Hi", "--model", "tiny", "-q", "none", "--layer", "0", "--save", str(target),
        "--force", "-f", "json",
    )  # fmt: skip
    assert forced.code == 0, forced.err
    with safe_open(str(target), framework="pt") as f:
        assert "0/model.decoder.layers.0.fc1" in set(f.keys())


@pytest.fixture(scope="module")
def nan_model(make_fixture_model) -> Path:
    def plant_nan(model) -> None:
        model.model.decoder.layers[1].fc2.bias[3] = float("nan")

    return make_fixture_model("nan", mutate=plant_nan)


def test_fail_on_nonfinite_exits_3_and_names_the_first_module(cli, nan_model: Path) -> None:
    args = ["trace", "Hello world", "--model", str(nan_model), "-q", "none", "--layer", "all"]
    clean = cli(*args, "-f", "json")
    assert clean.code == 0
    strict = cli(*args, "-f", "json", "--fail-on-nonfinite")
    assert strict.code == 3
    assert strict.err == "Error: model.decoder.layers.1.fc2 produced NaN or Inf (sentence 0)\n"
    doc = json.loads(strict.out)  # the data is still written in full
    fc2 = next(m for m in doc["modules"] if m["name"] == "model.decoder.layers.1.fc2")
    assert fc2["stats"]["nan"] > 0 and fc2["stats"]["mean"] is not None
    assert cli("trace", "Hi", "--model", "tiny", "-q", "none", "--fail-on-nonfinite").code == 0


def test_python_api_returns_what_the_cli_prints(cli, load_tiny) -> None:
    model = load_tiny("none")
    (result,) = trace(model, "Hello world", layers=[0])
    doc = json.loads(cli("trace", "Hello world", "--model", "tiny", "-q", "none", "-l", "0",
                         "-f", "json").out)  # fmt: skip
    assert doc.pop("ffn")[0]["layer"] == 0  # the CLI adds the FFN sparsity summary
    assert result.as_dict() == doc
