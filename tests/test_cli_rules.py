"""The CLI's rules, one test each, with the exact message and exit code a person sees.

Errors are one line, ``Error: <message>``, on stderr. Checks that need no weights run
before any model loads: those tests replace the loader with a spy that fails the test.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
TINY = ("--model", "tiny", "-q", "none")


def feed_stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


def jsonl(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


@pytest.fixture
def no_load(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make loading a model fail the test (pytest.fail is a BaseException, so the CLI's
    error boundary cannot turn it into an exit code). Returns the calls seen."""
    import optinspect.commands.common as common
    import optinspect.model.loading as loading

    calls: list[str] = []

    def spy(name: str) -> Callable[..., object]:
        def refuse(*args: object, **kwargs: object) -> object:
            calls.append(name)
            pytest.fail(f"{name} was called: this check must come before any model loads")

        return refuse

    monkeypatch.setattr(common, "load_with_status", spy("load_with_status"))
    monkeypatch.setattr(loading, "load_model", spy("load_model"))
    return calls


@pytest.fixture
def no_weights(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Like ``no_load``, one step later: load_model may start, but no tokenizer or weight
    file may be read (for checks that live inside load_model)."""
    import optinspect.model.loading as loading

    calls: list[str] = []

    def spy(name: str) -> Callable[..., object]:
        def refuse(*args: object, **kwargs: object) -> object:
            calls.append(name)
            pytest.fail(f"{name} was called: this check must come before any weight is read")

        return refuse

    for name in ("_load_weights", "_load_tokenizer", "check_safetensors"):
        monkeypatch.setattr(loading, name, spy(name))
    return calls


def assert_error(result, code: int, message: str) -> None:
    assert (result.code, result.err) == (code, f"Error: {message}\n"), result.out


# --- checks before loading ---------------------------------------------------------------

LAYER_SPEC = "cannot read layer spec '3-': use N, N-M, N,M, -1 or all"
NO_LAYER_9 = "layer 9 does not exist: the model has layers 0-3"


#: (arguments, message): usage errors (exit 2) found from the options and the config alone.
PRELOAD_ERRORS = [
    (("trace", "x", "--layer", "3-"), LAYER_SPEC),
    (("trace", "x", "--layer", "9"), NO_LAYER_9),
    (("trace", "x", "-b", "0"), "--batch-size must be at least 1, not 0"),
    (("trace", "x", "-b", "-3"), "--batch-size must be at least 1, not -3"),
    (("trace", "x", "--filter", "*.nope"), "no module matches --filter *.nope"),
    (
        ("trace", "x", "--filter", "model"),
        "no module matches --filter model (model never runs: the forward pass calls model.decoder)",
    ),
    (("compare", "x", "--layer", "9"), NO_LAYER_9),
    (("outliers", "x", "-b", "0"), "--batch-size must be at least 1, not 0"),
    (("lens", "x", "--top-k", "0"), "--top-k must be at least 1, not 0"),
    (("attention", "x", "--head", "9"), "head 9 does not exist: the model has heads 0-3"),
    (("trace", "x", "--force"), "--force only applies with --save or --plot"),
    (
        ("trace", "x", "--device", "cpu", "--device-map", "auto"),
        "give --device or --device-map, not both: the map 'auto' places the model",
    ),
    (
        ("trace", "--dry-run", "--tokens", "16", "some text"),
        "give TEXT or --tokens, not both",
    ),
]


@pytest.mark.parametrize(
    ("args", "message"), [pytest.param(a, m, id=" ".join(a)) for a, m in PRELOAD_ERRORS]
)
def test_usage_errors_before_loading(cli, no_load, args, message) -> None:
    assert_error(cli(*args, *TINY), 2, message)
    assert no_load == []


def test_8bit_with_float32_is_refused_before_loading(cli, no_load) -> None:
    # -q 8bit here, not TINY's none: the rule is about LLM.int8's compute dtype.
    result = cli("trace", "x", "--model", "tiny", "-q", "8bit", "--dtype", "float32")
    message = (
        "--quant 8bit computes in float16, not float32: use --dtype auto or float16, "
        "or --quant 4bit or none for float32"
    )
    assert_error(result, 2, message)


def test_empty_model_is_refused_before_loading(cli, no_load) -> None:
    result = cli("trace", "x", "--model", "", "-q", "none")
    assert_error(result, 2, "--model is empty: give a hub id, a folder or tiny")


def test_input_file_that_is_a_folder(cli, no_load, tmp_path: Path) -> None:
    result = cli("trace", "--file", str(tmp_path), *TINY)
    assert_error(result, 2, f"input file {tmp_path} is a folder")


def test_existing_save_file_needs_force(cli, no_load, tmp_path: Path) -> None:
    target = tmp_path / "existing.safetensors"
    target.write_bytes(b"keep me")
    result = cli("trace", "x", *TINY, "--save", str(target))
    assert_error(result, 2, f"{target} exists: use --force to overwrite it")
    assert target.read_bytes() == b"keep me"


def test_save_where_nothing_can_be_written(cli, no_load) -> None:
    # /proc exists and is a folder, but takes no new file: found by trying, before loading.
    result = cli("trace", "x", *TINY, "--save", "/proc/x.safetensors")
    assert result.code == 2
    # The OS's reason varies by kernel and filesystem; the sentence around it is ours.
    pattern = (
        r"Error: cannot write /proc/x\.safetensors: folder /proc takes no new file \([a-z ]+\)\n"
    )
    assert re.fullmatch(pattern, result.err), result.err


def test_save_onto_a_folder_even_with_force(cli, no_load, tmp_path: Path) -> None:
    result = cli("trace", "x", *TINY, "--save", str(tmp_path), "--force")
    assert_error(result, 2, f"cannot write {tmp_path}: it is a folder")


def test_plot_must_be_png(cli, no_load, tmp_path: Path) -> None:
    result = cli("trace", "x", *TINY, "--plot", str(tmp_path / "out.jpg"))
    assert_error(result, 2, "--plot writes PNG: give a file name ending in .png")


def test_existing_attention_png_needs_force(cli, no_load, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    target = tmp_path / "existing.png"
    target.write_bytes(b"keep me")
    result = cli("attention", "x", *TINY, "--png", str(target))
    assert_error(result, 2, f"{target} exists: use --force to overwrite it")
    assert target.read_bytes() == b"keep me"


def test_config_whose_heads_do_not_divide_hidden(cli, no_load, make_fixture_model) -> None:
    # A model with 5 heads of hidden 32 cannot even be built to save it, so a good
    # checkpoint gets its config edited afterwards: the config alone must be refused.
    folder = make_fixture_model("five-heads")
    config = json.loads((folder / "config.json").read_text())
    config["num_attention_heads"] = 5
    (folder / "config.json").write_text(json.dumps(config))
    result = cli("trace", "x", "--model", str(folder), "-q", "none")
    message = (
        f"the config of {folder} cannot be built: "
        "hidden_size 32 is not a multiple of num_attention_heads 5"
    )
    assert_error(result, 1, message)


def test_config_without_model_type(cli, no_load, tiny_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "no-type"
    shutil.copytree(tiny_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    del config["model_type"]
    (folder / "config.json").write_text(json.dumps(config))
    result = cli("trace", "x", "--model", str(folder), "-q", "none")
    assert_error(result, 1, f"{folder} is not an OPT model: its config has no model_type")


def test_quantized_offload_without_cuda_reads_no_weight(cli, no_weights) -> None:
    # This check lives in load_model (resolve_placement), not in preflight: the loading
    # spinner has started, but no tokenizer or weight file is read before it fails.
    import torch

    assert not torch.cuda.is_available()  # conftest hides CUDA unless -m gpu
    result = cli(
        "trace", "x", "--model", "tiny", "-q", "8bit", "--max-memory", "cpu=10KiB",
        "--device-map", "auto",
    )  # fmt: skip
    message = (
        "--quant 8bit cannot offload weights without CUDA (bitsandbytes moves them through "
        "a GPU): use --quant none with --max-memory or --offload-dir on the CPU"
    )
    assert_error(result, 2, message)
    assert no_weights == []


def test_compare_refuses_quantized_offload_before_the_reference_loads(cli, no_load) -> None:
    import torch

    assert not torch.cuda.is_available()
    result = cli(
        "compare", "x", "--model", "tiny", "-q", "8bit", "--against", "none",
        "--max-memory", "cpu=10KiB",
    )  # fmt: skip
    assert result.code == 2
    assert no_load == []


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


# --- output files ------------------------------------------------------------------------


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_save_file_follows_the_umask(cli, umask_022, tmp_path: Path) -> None:
    # Written to a temporary file and renamed: mkstemp makes 0600 files, which must not leak.
    target = tmp_path / "acts.safetensors"
    result = cli("trace", "Hello", *TINY, "--layer", "0", "--save", str(target))
    assert result.code == 0, result.err
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_plot_follows_the_umask_and_says_where_it_wrote(cli, umask_022, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    target = tmp_path / "layers.png"
    result = cli("trace", "Hello", *TINY, "--layer", "all", "--plot", str(target))
    assert result.code == 0, result.err
    assert result.err == f"wrote {target}\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


# --- parsing -------------------------------------------------------------------------------


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


def test_params_b_is_not_an_option(cli) -> None:
    # -b means --batch-size elsewhere; params groups with --by only.
    result = cli("params", "--model", "tiny", "-b", "layer")
    assert (result.code, result.err) == (
        2,
        "Error: No such option: -b\nTry 'optinspect params --help' for help.\n",
    )


COMMANDS = ["trace", "params", "tree", "lens", "attention", "compare", "outliers"]


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_has_no_markup_escapes_or_python_types(cli, command: str | None) -> None:
    result = cli(*([command] if command else []), "--help")
    assert result.code == 0, result.err
    assert "\\[" not in result.out
    for python_type in ("<str>", "<int>", "<float>", "<path>", "list["):
        assert python_type not in result.out, python_type


# --- a closed pipe ---------------------------------------------------------------------------


def test_reader_closing_the_pipe_ends_quietly_with_141(tmp_path: Path) -> None:
    # A real pipe into `head`: optinspect must stop as a process killed by SIGPIPE does,
    # with no traceback and no "Error:" line, whatever it still had to write.
    path = tmp_path / "many.txt"
    path.write_text("The quick brown fox jumps over the lazy dog\n" * 40, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1"}
    command = (
        f"{sys.executable} -m optinspect trace --file {path} --model tiny -q none "
        f"--format csv --layer all 2>{tmp_path / 'err'} | head -c 100 >/dev/null; "
        "echo ${PIPESTATUS[0]}"
    )
    done = subprocess.run(
        command, shell=True, executable="/bin/bash", env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.stdout.strip() == "141"
    assert (tmp_path / "err").read_text() == ""


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


SENTENCES = ["Hello world", "The quick brown fox", "The capital of France is"]


@pytest.fixture
def sentences_file(tmp_path: Path) -> Path:
    path = tmp_path / "s.txt"
    path.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("command", ["lens", "compare"])
def test_results_over_a_file_in_order(cli, sentences_file: Path, command: str) -> None:
    args = (command, "--file", str(sentences_file), *TINY, "-b", "2")
    document = json.loads(cli(*args, "-f", "json").out)
    assert [r["index"] for r in document["results"]] == [0, 1, 2]
    assert [r["text"] for r in document["results"]] == SENTENCES
    lines = jsonl(cli(*args, "-f", "jsonl").out)
    assert [(r["index"], r["text"]) for r in lines] == list(enumerate(SENTENCES))


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


def test_csv_over_a_file_has_one_header(cli, sentences_file: Path) -> None:
    out = cli("trace", "--file", str(sentences_file), *TINY, "--layer", "0", "-f", "csv").out
    rows = list(csv.reader(io.StringIO(out)))
    assert sum(1 for row in rows if row == rows[0]) == 1


def test_plot_without_layer_outputs_is_refused_before_loading(cli, no_load, tmp_path) -> None:
    pytest.importorskip("matplotlib")
    result = cli("trace", "x", *TINY, "--filter", "*.fc1", "--plot", str(tmp_path / "p.png"))
    assert_error(
        result,
        2,
        "--plot needs the decoder layers' outputs: use it without --filter, or with --layer all",
    )
    assert no_load == []


@pytest.mark.parametrize("option", [["--device-map", "auto"], ["--max-memory", "cpu=1GB"]])
def test_dry_run_refuses_placement_it_would_ignore(cli, no_load, option: list[str]) -> None:
    result = cli("trace", "x", "--model", "tiny", "--dry-run", *option)
    assert_error(
        result,
        2,
        "--dry-run builds the model on the meta device: it takes no --device-map, "
        "--max-memory or --offload-dir",
    )


def test_dry_run_tokens_carry_their_bytes(cli) -> None:
    result = cli("trace", "a — b", "--model", "tiny", "--dry-run", "-f", "json")
    assert result.code == 0, result.err
    pieces = [t.get("bytes") for t in json.loads(result.out)["tokens"] if "bytes" in t]
    assert pieces == ["e2", "80", "94"]  # the three bytes of "—", one token each
