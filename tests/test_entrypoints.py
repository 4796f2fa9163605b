"""The installed command and fast help: ``--help`` must never import torch."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys

import pytest

CHECK_NO_TORCH = """
import sys
from optinspect.cli import run
code = run({args!r})
heavy = [m for m in ("torch", "transformers", "bitsandbytes") if m in sys.modules]
print("HEAVY=" + ",".join(heavy))
sys.exit(code)
"""


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["trace", "--help"],
        ["params", "--help"],
        ["tree", "--help"],
        ["lens", "--help"],
        ["attention", "--help"],
    ],
)
def test_help_does_not_import_torch(args: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", CHECK_NO_TORCH.format(args=args)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Usage: optinspect" in proc.stdout
    assert proc.stdout.rstrip().endswith("HEAVY=")


def test_version_is_one_line_on_stdout_without_torch() -> None:
    from optinspect import __version__

    proc = subprocess.run(
        [sys.executable, "-c", CHECK_NO_TORCH.format(args=["--version"])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout == f"optinspect {__version__}\nHEAVY=\n"


def test_version_is_the_package_version() -> None:
    import re
    from pathlib import Path

    from optinspect import __version__

    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    # tomllib is Python 3.11+; the [project] table's version is the first at line start.
    match = re.search(r'^version = "([^"]+)"$', pyproject, re.MULTILINE)
    assert match is not None
    assert __version__ == match.group(1)


def test_bare_command_prints_the_help_and_succeeds(cli) -> None:
    # `optinspect` alone asks what it can do: the same help as --help (usage, options,
    # commands), on stdout, exit 0; no "Error:" and no second pointer to --help.
    bare = cli()
    assert (bare.code, bare.err) == (0, "")
    assert bare.out == cli("--help").out
    assert bare.out.startswith("Usage: optinspect [OPTIONS] COMMAND [ARGS]...")
    assert "Commands:" in bare.out


def test_installed_command_runs_the_tiny_model() -> None:
    exe = shutil.which("optinspect") or str(
        __import__("pathlib").Path(sys.executable).with_name("optinspect")
    )
    proc = subprocess.run(
        [exe, "trace", "Hello world", "--model", "tiny", "--layer", "0", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["modules"][0]["name"] == "model.decoder.layers.0"
    assert proc.stderr == ""


def test_error_from_the_installed_command_is_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "optinspect", "trace", "hi", "--model", "tiny", "--layer", "7"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr == "Error: layer 7 does not exist: the model has layers 0-3\n"
    assert proc.stdout == ""


def test_shell_completion_completes_commands_and_options() -> None:
    import os

    env = {**os.environ, "_OPTINSPECT_COMPLETE": "complete_bash", "COMP_CWORD": "1"}
    commands = subprocess.run(
        [sys.executable, "-m", "optinspect"],
        env={**env, "COMP_WORDS": "optinspect tr"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert commands.stdout.split() == ["trace", "tree"]
    options = subprocess.run(
        [sys.executable, "-m", "optinspect"],
        env={**env, "COMP_WORDS": "optinspect trace --qu", "COMP_CWORD": "2"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert options.stdout.split() == ["--quant"]


# --- examples in --help -------------------------------------------------------------------

HELP_COMMANDS = [
    "trace", "params", "tree", "lens", "attention", "compare", "outliers", "calibrate", "serve",
]  # fmt: skip
#: What ends a command in a shell line: the example's optinspect command stops there.
SHELL_OPERATORS = frozenset({"|", "||", "&", "&&", ";", ">", ">>", "<"})


def help_examples(help_text: str) -> list[str]:
    """The lines of the Examples paragraph of a --help text, as printed."""
    lines = help_text.splitlines()
    start = lines.index("  Examples:") + 1
    examples = []
    for line in lines[start:]:
        if line and not line.startswith(" "):  # the next section: Arguments:, Options:
            break
        if line.strip():
            examples.append(line)
    return examples


def optinspect_args(example: str) -> list[str]:
    """The arguments an example line gives optinspect (after `optinspect` or `-m optinspect`,
    up to a pipe or redirection); fails when the line holds no optinspect command."""
    import shlex

    lexer = shlex.shlex(example, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    tokens = list(lexer)
    assert "optinspect" in tokens, f"not a whole command: {example!r}"
    args: list[str] = []
    for token in tokens[tokens.index("optinspect") + 1 :]:
        if token in SHELL_OPERATORS:
            break
        args.append(token)
    return args


@pytest.mark.parametrize("columns", [80, 120])
@pytest.mark.parametrize("command", HELP_COMMANDS)
def test_help_examples_are_whole_commands_that_parse(
    cli, monkeypatch: pytest.MonkeyPatch, command: str, columns: int
) -> None:
    # Each example prints verbatim on one line, fits the terminal, and is a command line
    # the CLI accepts: pasted into a shell, it runs (no line cut mid-command, no lost `\`).
    import click
    import typer

    from optinspect.cli import app

    monkeypatch.setenv("COLUMNS", str(columns))
    result = cli(command, "--help")
    assert result.code == 0, result.err
    examples = help_examples(result.out)
    assert len(examples) >= 2, result.out
    group = typer.main.get_command(app)
    for example in examples:
        assert len(example) <= columns, f"wider than {columns} columns: {example!r}"
        name, *rest = optinspect_args(example)
        sub = group.get_command(click.Context(group), name)
        assert sub is not None, example
        try:
            sub.make_context(name, rest).close()
        except click.UsageError as e:
            pytest.fail(f"{example!r} does not parse: {e.format_message()}")


# --- the end of the process ------------------------------------------------------------------

#: main() as the console script runs it, with an exit hook that leaves a mark: the mark
#: is there only when the process ended through the interpreter's teardown.
MAIN_WITH_MARK = """
import atexit, sys, threading
atexit.register(lambda: open({mark!r}, "w").write("teardown"))
if {thread!r}:  # alive until the main thread ends, however long start-up takes
    threading.Thread(target=threading.main_thread().join).start()
sys.argv = ["optinspect", *{args!r}]
from optinspect.cli import main
main()
"""


def run_main(tmp_path, args: list[str], *, thread: bool = False, **kwargs):
    mark = tmp_path / "mark"
    code = MAIN_WITH_MARK.format(mark=str(mark), thread=thread, args=args)
    proc = subprocess.run([sys.executable, "-c", code], timeout=300, **kwargs)
    return proc, mark.exists()


@pytest.mark.parametrize("stdout", ["file", "pipe"])
def test_output_is_whole_when_the_process_ends_without_teardown(tmp_path, stdout: str) -> None:
    # main() ends the process with os._exit once stdout and stderr are flushed, skipping
    # the second of teardown: nothing written may be lost, to a file or a pipe (~1 MB).
    sentences = [f"Sentence number {i} is here" for i in range(120)]
    (tmp_path / "s.txt").write_text("\n".join(sentences) + "\n", encoding="utf-8")
    args = ["trace", "--file", str(tmp_path / "s.txt"), "--model", "tiny", "-q", "none",
            "--layer", "all", "-f", "csv", "--timings"]  # fmt: skip
    if stdout == "file":
        with (tmp_path / "out.csv").open("w") as out:
            proc, torn_down = run_main(tmp_path, args, stdout=out, stderr=subprocess.PIPE)
        text = (tmp_path / "out.csv").read_text(encoding="utf-8")
    else:
        proc, torn_down = run_main(tmp_path, args, capture_output=True)
        text = proc.stdout.decode("utf-8")
    assert proc.returncode == 0, proc.stderr
    assert not torn_down  # it did end at once
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == len(sentences) * 4 * 11  # every module of 4 layers, every sentence
    assert rows[-1]["sentence"] == str(len(sentences) - 1)
    assert text.endswith("\n")
    assert proc.stderr.decode().startswith("timings: ")


@pytest.mark.parametrize(
    ("args", "thread"),
    [(["serve", "--status"], False), (["--version"], True)],
    ids=["server", "thread"],
)
def test_the_server_and_running_threads_get_the_full_teardown(
    tmp_path, args: list[str], thread: bool
) -> None:
    proc, torn_down = run_main(tmp_path, args, thread=thread, capture_output=True)
    assert torn_down
    assert proc.returncode == (1 if args[0] == "serve" else 0)  # no server runs: exit 1


COMMANDS = ["trace", "params", "tree", "lens", "attention", "compare", "outliers"]


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_has_no_markup_escapes_or_python_types(cli, command: str | None) -> None:
    result = cli(*([command] if command else []), "--help")
    assert result.code == 0, result.err
    assert "\\[" not in result.out
    for python_type in ("<str>", "<int>", "<float>", "<path>", "list["):
        assert python_type not in result.out, python_type
