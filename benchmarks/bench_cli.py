"""Measurements of the installed ``optinspect`` command, each run in a fresh process."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench_util import ChildRun, last_line, run_child

E2E_TEXT = "The quick brown fox jumps over the lazy dog"
TIMINGS = re.compile(
    r"timings: import (?P<import>[\d.]+)s · load (?P<load>[\d.]+)s · "
    r"forward (?P<forward>[\d.]+)s · render (?P<render>[\d.]+)s · total (?P<total>[\d.]+)s"
)


@dataclass
class CommandResult:
    """Repeated runs of one command line."""

    label: str
    argv: list[str]
    runs: list[ChildRun] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    error: str | None = None  # set when a run failed: the command's last line of stderr

    @property
    def times(self) -> list[float]:
        return [r.seconds for r in self.runs]

    @property
    def rss(self) -> list[float]:
        return [r.max_rss_mib for r in self.runs]


def optinspect_exe() -> str:
    """The venv's console script next to this interpreter, else the one on PATH."""
    beside = Path(sys.executable).parent / "optinspect"
    return str(beside) if beside.exists() else "optinspect"


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env["COLUMNS"] = "200"
    return env


def measure(
    commands: dict[str, list[str]],
    repeats: int,
    warmup: int,
    baseline: str | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, CommandResult]:
    """Run each command line ``repeats`` times round-robin after ``warmup`` rounds.

    ``env`` defaults to ``child_env()``.
    """
    env = env or child_env()
    results = {label: CommandResult(label, argv) for label, argv in commands.items()}
    for round_index in range(warmup + repeats):
        spent: dict[str, float] = {}
        for label, result in results.items():
            if result.error is not None:
                continue
            run = run_child(result.argv, env)
            if run.returncode != 0:
                result.error = f"exit {run.returncode}: {last_line(run.stderr or run.stdout)}"
                continue
            if round_index >= warmup:
                result.runs.append(run)
                spent[label] = run.seconds
        if baseline is not None and baseline in spent:
            for label, seconds in spent.items():
                results[label].ratios.append(seconds / spent[baseline])
    return results


def startup(repeats: int, warmup: int) -> dict[str, CommandResult]:
    return measure(
        {
            "optinspect --help": [optinspect_exe(), "--help"],
            'python -c "import torch"': [sys.executable, "-c", "import torch"],
        },
        repeats,
        warmup,
        baseline='python -c "import torch"',
    )


def params_available() -> str | None:
    """None when ``optinspect params`` exists; otherwise why not."""
    run = run_child([optinspect_exe(), "params", "--help"], child_env())
    if run.returncode == 0:
        return None
    return f"`optinspect params --help` exits {run.returncode}: {last_line(run.stderr)}"


#: Commands that need the model's config only (built in for the OPT family).
CONFIG_COMMANDS = (
    ["params", "--model", "facebook/opt-175b"],
    ["tree", "--model", "facebook/opt-175b"],
    ["trace", "--model", "facebook/opt-175b", "--dry-run", "--tokens", "16", "--layer", "0"],
)


def config_only(repeats: int, warmup: int) -> tuple[dict[str, CommandResult], str | None]:
    exe = optinspect_exe()
    commands = {"optinspect " + " ".join(args): [exe, *args] for args in CONFIG_COMMANDS}
    missing = params_available()
    if missing is not None:
        del commands["optinspect params --model facebook/opt-175b"]
    return measure(commands, repeats, warmup), missing


def local_loads(quants: Sequence[str], repeats: int, warmup: int) -> dict[str, CommandResult]:
    """A fresh process that loads the tiny model here (no server) and traces one word."""
    exe = optinspect_exe()
    commands = {}
    for quant in quants:
        args = ["--model", "tiny", "--quant", quant, "--format", "json", "--no-server"]
        commands[f'optinspect trace "Hello" {" ".join(args)}'] = [exe, "trace", "Hello", *args]
    return measure(commands, repeats, warmup)


def end_to_end(repeats: int, warmup: int) -> tuple[CommandResult, dict[str, list[float]]]:
    """``trace --timings`` on the tiny model; the program's own split of its time."""
    label = f'optinspect trace "{E2E_TEXT}" --model tiny --layer 0 --timings'
    argv = [optinspect_exe(), "trace", E2E_TEXT, "--model", "tiny", "--layer", "0", "--timings"]
    result = measure({label: argv}, repeats, warmup)[label]
    parts: dict[str, list[float]] = {}
    for run in result.runs:
        match = TIMINGS.search(run.stderr)
        if match is None:
            result.error = f"no timings line on stderr: {last_line(run.stderr)}"
            break
        for key, value in match.groupdict().items():
            parts.setdefault(key, []).append(float(value))
        # The interpreter's start before optinspect's first line, and its exit after the
        # timings line: all the wall time the program's own total does not count.
        parts.setdefault("outside", []).append(run.seconds - float(match["total"]))
    return result, parts
