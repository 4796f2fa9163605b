"""engine/inputs.py: sentences from TEXT, a file or stdin, one per line, read lazily."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY, assert_error, feed_stdin, jsonl
from optinspect.engine.inputs import iter_lines, peek, read_texts
from optinspect.errors import UsageError

SRC = Path(__file__).resolve().parents[1] / "src"
SENTENCES = ["Hello world", "The quick brown fox jumps over the lazy dog", "The capital of France"]


# --- the readers themselves -------------------------------------------------------------


def test_blank_and_whitespace_lines_are_skipped_and_line_ends_dropped() -> None:
    raw = [b"one\n", b"\n", b"   \t\n", b"two\r\n", b"three"]
    assert list(iter_lines(raw, "stdin")) == ["one", "two", "three"]


def test_crlf_is_dropped_but_inner_spaces_are_kept() -> None:
    assert list(iter_lines([b"  a b  \r\n"], "x")) == ["  a b  "]


def test_invalid_utf8_names_its_source_line_and_byte() -> None:
    lines = iter_lines([b"fine\n", b"\n", b"ab\xffc\n"], "notes.txt")
    assert next(lines) == "fine"  # lazily: good lines come out before the bad one is read
    with pytest.raises(UsageError) as info:
        next(lines)
    assert str(info.value) == "line 3 of notes.txt is not valid UTF-8 (byte 3)"
    assert info.value.exit_code == 2


def test_file_is_read_and_counts_as_many(tmp_path: Path) -> None:
    path = tmp_path / "s.txt"
    path.write_bytes(b"first\r\n\nsecond\n")
    texts, many = read_texts(None, path)
    assert (list(texts), many) == (["first", "second"], True)


def test_a_file_knows_how_many_sentences_it_holds(tmp_path: Path) -> None:
    # The progress counter's total: what iter_lines yields, counted before the run.
    path = tmp_path / "s.txt"
    path.write_bytes(b"\xef\xbb\xbf\nfirst\r\n\n  \nsecond\n\xff bad\nlast")
    texts, _ = read_texts(None, path)
    assert texts.total == 4  # blank lines (a BOM alone too) are none; a bad line is one
    peeked = peek(texts)
    assert peeked is not None and peeked.total == 4
    assert [next(peeked), next(peeked)] == ["first", "second"]
    from_stdin, _ = read_texts("-", None, io.BytesIO(b"a\nb\n"))
    assert from_stdin.total is None  # not known before its end


def test_invalid_utf8_in_a_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "s.txt"
    path.write_bytes(b"\xfe\n")
    texts, _ = read_texts(None, path)
    with pytest.raises(UsageError) as info:
        list(texts)
    assert str(info.value) == f"line 1 of {path} is not valid UTF-8 (byte 1)"


def test_dash_reads_the_given_stdin() -> None:
    texts, many = read_texts("-", None, io.BytesIO(b"a\n\nb\n"))
    assert (list(texts), many) == (["a", "b"], True)


def test_dash_defaults_to_the_process_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    feed_stdin(monkeypatch, b"from stdin\n")
    texts, many = read_texts("-", None)
    assert (list(texts), many) == (["from stdin"], True)


def test_one_text_is_one_sentence() -> None:
    texts, many = read_texts("  Hello  ", None)
    assert (list(texts), many) == (["  Hello  "], False)


@pytest.mark.parametrize(
    ("text", "file", "message"),
    [
        ("hi", Path("x.txt"), "give TEXT or --file, not both"),
        (None, None, "give the text to lens, - for stdin, or --file PATH"),
        ("  ", None, "the text is empty: give at least one word to lens"),
        # Bytes that are not UTF-8 reach Python's argv as lone surrogates (surrogateescape):
        # abc\xff is "abc\udcff", and the bad byte is counted in what was typed.
        ("abc\udcff", None, "the text is not valid UTF-8 (byte 4)"),
        ("\u00e9t\u00e9 \udcc3", None, "the text is not valid UTF-8 (byte 7)"),
    ],
)
def test_usage_errors(text: str | None, file: Path | None, message: str) -> None:
    with pytest.raises(UsageError) as info:
        read_texts(text, file, verb="lens")
    assert (str(info.value), info.value.exit_code) == (message, 2)


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(UsageError) as info:
        read_texts(None, missing)
    assert str(info.value) == f"input file {missing} does not exist"


# --- through the CLI --------------------------------------------------------------------


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


#: What Python's argv holds for the typed bytes abc\xff.
NOT_UTF8 = "abc\udcff"


@pytest.mark.parametrize(
    "args",
    [
        ["trace", NOT_UTF8, "-f", "csv"],
        ["trace", NOT_UTF8, "-f", "json", "--dry-run"],
        ["lens", NOT_UTF8],
        ["attention", NOT_UTF8],
        ["compare", NOT_UTF8, "-f", "jsonl"],
        ["outliers", NOT_UTF8],
        ["calibrate", NOT_UTF8],
    ],
    ids=lambda args: " ".join(a for a in args if a != NOT_UTF8),
)
def test_text_that_is_not_utf8_is_told_as_stdin_is(cli, args: list[str]) -> None:
    # As invalid UTF-8 on stdin: a usage error naming the first bad byte, and no output.
    result = cli(*args, "--model", "tiny", "-q", "none")
    assert (result.code, result.out, result.err) == (
        2,
        "",
        "Error: the text is not valid UTF-8 (byte 4)\n",
    )


def test_text_that_is_not_utf8_in_a_real_process() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "optinspect", "trace", b"abc\xff", "--model", "tiny", "-f", "csv"],
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(SRC), "OPTINSPECT_NO_SERVER": "1"},
        timeout=300,
        check=False,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        2,
        b"",
        b"Error: the text is not valid UTF-8 (byte 4)\n",
    )


def test_text_and_file_together(cli, tmp_path: Path) -> None:
    result = cli("trace", "hi", "--file", str(tmp_path / "x.txt"), "--model", "tiny")
    assert (result.code, result.err) == (2, "Error: give TEXT or --file, not both\n")


def test_missing_file_through_the_cli(cli, tmp_path: Path) -> None:
    missing = tmp_path / "x.txt"
    result = cli("trace", "--file", str(missing), "--model", "tiny")
    assert (result.code, result.err) == (2, f"Error: input file {missing} does not exist\n")


def test_empty_input_traces_nothing(cli, monkeypatch) -> None:
    feed_stdin(monkeypatch, b"\n\n")
    result = cli("trace", "-", "--model", "tiny", "-q", "none", "-f", "csv")
    assert result.code == 0
    assert result.out.count("\n") == 1  # the header alone
    assert "no sentences" in result.err


# --- --truncate says what it cut ---------------------------------------------------------

LONG = " ".join(["word"] * 300)  # 602 tokens with </s>; the tiny model takes 128
CUT = "note: {} has 602 tokens; --truncate kept the first 128\n"


@pytest.mark.parametrize(
    "args",
    [
        ["trace", "-f", "json"],
        ["lens", "-f", "json"],
        ["attention", "-f", "json"],
        ["compare", "-f", "json"],  # two runs of the text, one note
        ["outliers", "-f", "json"],
    ],
    ids=lambda args: args[0],
)
def test_truncate_notes_a_cut_text_once(cli, args: list[str]) -> None:
    result = cli(args[0], LONG, "--model", "tiny", "-q", "none", "--truncate", *args[1:])
    assert result.code == 0, result.err
    assert result.err == CUT.format("the text")


def test_truncate_notes_each_cut_line_by_where_it_is(cli, tmp_path: Path) -> None:
    path = tmp_path / "long.txt"
    path.write_text(f"{LONG}\nshort\n\n{LONG}\n", encoding="utf-8")
    for command in ("trace", "calibrate"):
        result = cli(command, "--file", str(path), "--model", "tiny", "-q", "none",
                     "--truncate", "-f", "json")  # fmt: skip
        assert result.code == 0, result.err
        assert result.err == CUT.format(f"line 1 of {path}") + CUT.format(f"line 4 of {path}")


def test_a_text_that_fits_is_not_noted(cli) -> None:
    result = cli("trace", "Hello", "--model", "tiny", "-q", "none", "--truncate", "-f", "json")
    assert (result.code, result.err) == (0, "")


# --- reading the input --------------------------------------------------------------------


def test_too_long_line_names_its_physical_line(cli, tmp_path: Path, tiny_dir: Path) -> None:
    limit = json.loads((tiny_dir / "config.json").read_text())["max_position_embeddings"]
    path = tmp_path / "s.txt"
    # Line 1 is fine, line 2 blank (skipped, but still counted), line 3 is too long.
    path.write_text("Hello world\n\n" + "word " * (limit + 10) + "\n", encoding="utf-8")
    result = cli("trace", "--file", str(path), *TINY)
    assert result.code == 2
    pattern = (
        rf"Error: line 3 of {re.escape(str(path))}: the text has \d+ tokens; "
        rf"tiny accepts at most {limit} \(or use --truncate\)\n"
    )
    assert re.fullmatch(pattern, result.err), result.err


def test_file_dash_reads_stdin(cli, monkeypatch) -> None:
    feed_stdin(monkeypatch, b"Hello world\nThe capital of France\n")
    result = cli("trace", "--file", "-", *TINY, "-f", "jsonl", "--layer", "0")
    assert result.code == 0, result.err
    assert [r["text"] for r in jsonl(result.out)] == ["Hello world", "The capital of France"]


NOTHING = "note: the input holds no sentences; nothing to {}\n"


@pytest.mark.parametrize(
    ("command", "verb"),
    [("trace", "trace"), ("lens", "read through the lens"), ("compare", "compare")],
)
def test_empty_stdin_writes_an_empty_result_without_loading(
    cli, monkeypatch, no_load, command: str, verb: str
) -> None:
    feed_stdin(monkeypatch, b"\n  \n")  # blank lines are no sentences
    result = cli(command, "-", *TINY, "-f", "jsonl")
    assert (result.code, result.out, result.err) == (0, "", NOTHING.format(verb))


@pytest.mark.parametrize("command", ["trace", "lens", "compare"])
def test_empty_file_as_json_is_an_empty_results_document(
    cli, no_load, tmp_path: Path, command: str
) -> None:
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    result = cli(command, "--file", str(path), *TINY, "-f", "json")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert doc["results"] == []
    # The model is named as a document with results names it (as asked: none was loaded).
    assert doc["model"] == "tiny"
    assert result.err.startswith("note: the input holds no sentences; nothing to ")


def test_outliers_refuse_empty_stdin_without_loading(cli, monkeypatch, no_load) -> None:
    # Outliers summarise a corpus: with no sentence there is no answer, so it is an error.
    feed_stdin(monkeypatch, b"")
    result = cli("outliers", "-", *TINY)
    assert_error(result, 2, "the input holds no sentences: give at least one line of text")


def _token_ids(result) -> list[int]:
    return [token["id"] for token in jsonl(result.out)[0]["tokens"]]


def test_bom_on_stdin_and_in_a_file_is_no_token(cli, monkeypatch, tmp_path: Path) -> None:
    args = (*TINY, "-f", "jsonl", "--layer", "0")
    plain = cli("trace", "Hello world", *args)
    feed_stdin(monkeypatch, "\ufeffHello world\n".encode())
    from_stdin = cli("trace", "-", *args)
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeffHello world\n".encode())
    from_file = cli("trace", "--file", str(path), *args)
    assert _token_ids(from_stdin) == _token_ids(plain)
    assert _token_ids(from_file) == _token_ids(plain)
    assert jsonl(from_file.out)[0]["text"] == "Hello world"
