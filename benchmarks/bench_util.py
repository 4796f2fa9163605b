"""Timing, machine facts and markdown helpers shared by the benchmark sections.

Everything here is standard library only, so ``run.py --help`` stays instant.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: The characters the report prints; escaped here so the source stays ASCII.
TIMES = "\u00d7"
DASH = "\u2013"


@dataclass
class Series:
    """Wall times (seconds) of one thing, repeated; ``ratios`` pair each run with a baseline."""

    label: str
    times: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)


def time_call(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleave(
    runs: dict[str, Callable[[], object]],
    repeats: int,
    warmup: int = 1,
    baseline: str | None = None,
) -> dict[str, Series]:
    """Time every callable ``repeats`` times, round-robin, after ``warmup`` untimed rounds.

    Round-robin order means a burst of load on the shared machine hits every
    variant alike; each variant's ratio to ``baseline`` is taken within a round
    (same seconds of the same run), then summarised.
    """
    for _ in range(warmup):
        for fn in runs.values():
            fn()
    series = {name: Series(name) for name in runs}
    for _ in range(repeats):
        spent = {name: time_call(fn) for name, fn in runs.items()}
        for name, seconds in spent.items():
            series[name].times.append(seconds)
            if baseline is not None:
                series[name].ratios.append(seconds / spent[baseline])
    return series


@dataclass
class ChildRun:
    """One subprocess: wall time, its own peak RSS (from wait4), exit code and output."""

    seconds: float
    max_rss_mib: float
    returncode: int
    stdout: str
    stderr: str


# Runs in a small interpreter that forks and execs the command. Linux counts the
# RSS of the process that forks into the child's ru_maxrss, so forking straight
# from this process (hundreds of MiB with torch loaded) would inflate every figure.
_LAUNCHER = r"""
import json, os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    except OSError as e:
        sys.stderr.write(f"cannot run {sys.argv[2]}: {e}\n")
        sys.stderr.flush()
    os._exit(127)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - start
with open(sys.argv[1], "w") as f:
    json.dump({"seconds": seconds, "maxrss_kib": usage.ru_maxrss,
               "returncode": os.waitstatus_to_exitcode(status)}, f)
"""


def run_child(argv: Sequence[str], env: dict[str, str] | None = None) -> ChildRun:
    """Run ``argv`` alone and measure it: wall time from fork to exit, and its own peak RSS."""
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile(suffix=".json") as facts,
    ):
        launcher = [sys.executable, "-S", "-c", _LAUNCHER, facts.name, *argv]
        subprocess.run(launcher, stdout=out, stderr=err, env=env, cwd=REPO, check=False)
        measured = json.loads(Path(facts.name).read_text() or "{}")
        out.seek(0)
        err.seek(0)
        return ChildRun(
            seconds=measured.get("seconds", float("nan")),
            max_rss_mib=measured.get("maxrss_kib", 0) / 1024,  # Linux reports KiB
            returncode=measured.get("returncode", -1),
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
        )


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


# -- machine and versions ------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def ram_gib() -> float | None:
    try:
        match = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
    except OSError:
        return None
    return int(match.group(1)) / 1024**2 if match else None


def load_average() -> str:
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return "n/a"
    return f"{one:.2f} (1 min), {five:.2f} (5 min)"


def load_1min() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def wait_for_load(limit: float, patience: float = 600.0, step: float = 20.0) -> float:
    """Sleep while the 1-minute load average is above ``limit``, at most ``patience`` seconds.

    Another user's test suite on a 2-core machine skews every timing; this waits it out.
    Returns the seconds waited.
    """
    waited = 0.0
    while (load := load_1min()) is not None and load > limit and waited < patience:
        print(f"[benchmarks] load {load:.2f} > {limit}: waiting", file=sys.stderr, flush=True)
        time.sleep(step)
        waited += step
    return waited


def version_of(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def python_version() -> str:
    return f"{platform.python_implementation()} {sys.version.split()[0]}"


# -- process memory (Linux) ------------------------------------------------------
def _status_kib(key: str) -> int:
    match = re.search(rf"{key}:\s+(\d+) kB", Path("/proc/self/status").read_text())
    return int(match.group(1)) if match else 0


def rss_mib() -> float:
    return _status_kib("VmRSS") / 1024


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mib() -> float:
    return _status_kib("VmHWM") / 1024


# -- formatting -------------------------------------------------------------------
def fmt_seconds(seconds: float) -> str:
    if seconds >= 10:
        return f"{seconds:.1f} s"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 0.01:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds * 1000:.1f} ms"


def fmt_times(values: Sequence[float]) -> str:
    """Median (min-max) of wall times."""
    if not values:
        return DASH
    median = statistics.median(values)
    if len(values) == 1:
        return fmt_seconds(median)
    return f"{fmt_seconds(median)} ({fmt_seconds(min(values))}{DASH}{fmt_seconds(max(values))})"


def fmt_ratio(values: Sequence[float]) -> str:
    if not values:
        return DASH
    median = statistics.median(values)
    if len(values) == 1:
        return f"{median:.2f}{TIMES}"
    return f"{median:.2f}{TIMES} ({min(values):.2f}{DASH}{max(values):.2f})"


def fmt_rate(values: Sequence[float], count: int) -> str:
    """Items per second from wall times: median (min-max)."""
    rates = [count / t for t in values]
    if len(rates) == 1:
        return f"{rates[0]:.1f}/s"
    return f"{statistics.median(rates):.1f}/s ({min(rates):.1f}{DASH}{max(rates):.1f})"


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(met: bool | None) -> str:
    if met is None:
        return "not measured"
    return "met" if met else "**missed**"
