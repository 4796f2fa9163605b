"""Many sentences through one model at the CLI: JSONL streaming, CSV, filters, exit 3, API."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import pytest

from conftest import TINY, feed_stdin, jsonl
from optinspect import trace

SENTENCES = ["Hello world", "The quick brown fox jumps over the lazy dog", "The capital of France"]


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
        "sentence", "text", "order", "module", "type", "layer", "call", "output", "shape",
        "dtype", "device", "weight_dtype", "mean", "absmax", "zeros",
    ]  # fmt: skip
    assert len(rows) == 2 * 4 * 11
    # No column is called "index": the JSON's index is the sentence, and the module
    # call's place in the run is "order", so neither name means two things.
    assert rows[0]["module"] == "model.decoder.layers.0" and rows[0]["sentence"] == "0"
    assert rows[0]["order"] == "0" and rows[1]["order"] == "1"
    assert rows[-1]["sentence"] == "1" and rows[-1]["text"] == SENTENCES[1]
    fc1 = next(r for r in rows if r["module"].endswith("layers.0.fc1"))
    assert fc1["shape"] == "4x256" and float(fc1["absmax"]) > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "./no-such-folder"], "model folder ./no-such-folder does not exist"),
        (["--device", "cuda"], "device cuda was asked for, but CUDA is not available here"),
        (["--layer", "99"], "layer 99 does not exist: the model has layers 0-3"),
        (["--filter", "nothing.*"], "no module matches --filter nothing.*"),
        (["abc\udcff"], "the text is not valid UTF-8 (byte 4)"),  # argv's abc\xff
    ],
    ids=["model", "device", "layer", "filter", "text"],
)
@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl", "table"])
def test_an_error_before_any_result_writes_nothing(
    cli, fmt: str, args: list[str], message: str
) -> None:
    # A header alone would read as "no rows": CSV, like every format, writes nothing.
    text = [] if args[0].startswith("abc") else ["Hello world"]
    result = cli("trace", *text, "--model", "tiny", "-q", "none", *args, "-f", fmt)
    assert (result.code, result.out, result.err) == (2, "", f"Error: {message}\n")


def test_csv_quotes_a_bare_carriage_return(cli, monkeypatch) -> None:
    # "x\ry" is one sentence (only \n ends a line of input); unquoted, a reader splits
    # its row at the \r, as the csv module does when reading a universal-newline stream.
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"x\ry\n")))
    result = cli("trace", "-", "--model", "tiny", "-q", "none", "--layer", "0", "-f", "csv")
    assert result.code == 0, result.err
    rows = list(csv.reader(io.StringIO(result.out, newline="")))
    assert len(rows) == 1 + 11  # the header, then layer 0 and its 10 submodules
    assert {row[1] for row in rows[1:]} == {"x\ry"}
    translated = list(csv.reader(io.StringIO(result.out, newline=None)))  # as sys.stdin reads
    assert len(translated) == len(rows)


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


@pytest.mark.parametrize("command", ["lens", "compare"])
def test_results_over_a_file_in_order(cli, sentences_file: Path, command: str) -> None:
    args = (command, "--file", str(sentences_file), *TINY, "-b", "2")
    document = json.loads(cli(*args, "-f", "json").out)
    assert [r["index"] for r in document["results"]] == [0, 1, 2]
    assert [r["text"] for r in document["results"]] == SENTENCES
    lines = jsonl(cli(*args, "-f", "jsonl").out)
    assert [(r["index"], r["text"]) for r in lines] == list(enumerate(SENTENCES))


def test_csv_over_a_file_has_one_header(cli, sentences_file: Path) -> None:
    out = cli("trace", "--file", str(sentences_file), *TINY, "--layer", "0", "-f", "csv").out
    rows = list(csv.reader(io.StringIO(out)))
    assert sum(1 for row in rows if row == rows[0]) == 1
