"""errors.py: library exceptions become one-line user errors with their exit codes."""

from __future__ import annotations

import pickle

import pytest
import torch

from optinspect.errors import (
    EXIT_RUNTIME,
    EXIT_USAGE,
    CheckpointError,
    ResourceError,
    UsageError,
    translate,
)

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
