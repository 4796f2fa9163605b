"""Errors and exit codes: library exceptions become one-line user errors with their exit
codes; fuzzed text gives a result or one clean line, never a traceback; a closed pipe ends
quietly with 141."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optinspect.analyses.trace import iter_trace
from optinspect.errors import (
    EXIT_RUNTIME,
    EXIT_USAGE,
    CheckpointError,
    OptinspectError,
    ResourceError,
    UsageError,
    translate,
)

SRC = Path(__file__).resolve().parents[1] / "src"
OOM = "out of memory; try --quant 4bit, a smaller --model, or a CPU run with --device cpu"


def test_cuda_out_of_memory_becomes_the_oom_hint() -> None:
    error = translate(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert type(error) is ResourceError
    assert str(error) == OOM
    assert error.exit_code == EXIT_RUNTIME


def test_unpickling_error_becomes_a_checkpoint_error() -> None:
    error = translate(pickle.UnpicklingError("invalid load key, 'x'."))
    assert type(error) is CheckpointError
    # The cause, not the library's words: load_model prefixes which model it was.
    assert str(error) == "its pickle checkpoint holds more than tensors, so it was refused unread"
    assert error.exit_code == EXIT_RUNTIME


@pytest.mark.parametrize("error", [ValueError("odd"), RuntimeError("x"), KeyError("k")])
def test_an_unknown_exception_is_not_translated(error: Exception) -> None:
    # None tells the caller to re-raise it as it is (a bug shows its traceback).
    assert translate(error) is None


def test_our_own_errors_pass_through_unchanged() -> None:
    error = UsageError("bad value")
    assert translate(error) is error and error.exit_code == EXIT_USAGE


def test_out_of_memory_gives_hints(cli, monkeypatch) -> None:
    import torch

    import optinspect.commands.common as common

    def exhausted(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(common, "load_with_status", exhausted)
    result = cli("trace", "hi", "--model", "tiny")
    assert result.code == 1
    assert result.err == (
        "Error: out of memory; try --quant 4bit, a smaller --model, or a CPU run with "
        "--device cpu\nRun again with --debug for the traceback.\n"
    )


def test_params_b_is_not_an_option(cli) -> None:
    # -b means --batch-size elsewhere; params groups with --by only.
    result = cli("params", "--model", "tiny", "-b", "layer")
    assert (result.code, result.err) == (
        2,
        "Error: No such option: -b\nTry 'optinspect params --help' for help.\n",
    )


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


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(max_size=60))
def test_any_text_traces_or_fails_cleanly(load_tiny, text: str) -> None:
    model = load_tiny("none")
    try:
        (result,) = iter_trace(model, [text], layers="0")
    except OptinspectError as e:
        assert e.exit_code == 2
        assert "\n" not in str(e)
        return
    assert result.tokens[0].id == 2
    assert len(result.modules) == 11


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(min_size=1, max_size=40).filter(lambda t: t != "-"))  # "-" means stdin
def test_any_text_through_the_cli_never_shows_a_traceback(cli, text: str) -> None:
    # TEXT comes last: a text that looks like an option (--quant) then has no value to take
    # from the options after it, which would leave the text out and the model unnamed.
    result = cli("trace", "--model", "tiny", "-q", "none", "-f", "json", "--layer", "-1", text)
    assert "Traceback" not in result.err
    if result.code == 0:
        assert json.loads(result.out)["text"] == text
    else:
        assert result.code == 2 and result.err.startswith("Error: ")
        # One line, plus a pointer to --help when the parser refused it (e.g. "-x"); that
        # pointer is click's text, so only its mention of --help is checked.
        lines = result.err.splitlines()
        assert len(lines) == 1 or (len(lines) == 2 and "--help" in lines[1])
