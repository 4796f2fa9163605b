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
from optinspect.engine.records import STAT_NAMES

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


@pytest.mark.parametrize("quant", ["none", "8bit"])
def test_statistics_are_the_same_alone_and_in_a_padded_batch(load_tiny, quant: str) -> None:
    model = load_tiny(quant)
    # Padding changes matmul shapes, so float rounding may differ slightly; LLM.int8 also
    # picks outlier columns over the whole batch, padding rows included.
    tolerance = {"rel": 1e-4, "abs": 1e-5} if quant == "none" else {"rel": 2e-2, "abs": 2e-3}
    batched = trace(model, SENTENCES, layers="all", batch_size=3)
    for i, text in enumerate(SENTENCES):
        (alone,) = trace(model, text, layers="all")
        assert [m.name for m in alone.modules] == [m.name for m in batched[i].modules]
        for a, b in zip(alone.modules, batched[i].modules, strict=True):
            assert a.shape == b.shape, a.name
            sa, sb = a.stats.as_dict(), b.stats.as_dict()
            for key in STAT_NAMES:
                assert sb[key] == pytest.approx(sa[key], **tolerance), (a.name, key)


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
            torch.testing.assert_close(saved, outputs["fc1"], rtol=1e-4, atol=1e-5)
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
