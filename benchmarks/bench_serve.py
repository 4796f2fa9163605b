"""``optinspect serve`` against a local load: every call a whole ``python -m optinspect`` process.

The server runs in a private, short ``XDG_RUNTIME_DIR`` (a Unix socket path holds about
104 bytes) that is also its ``TMPDIR`` (where the one lock per user lives), so a server
of the user's is neither used nor disturbed; ``serve --stop`` ends it, and it is killed
on any error.
"""

from __future__ import annotations

import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_procs import E2E_TEXT, Runs, measure
from bench_report import Row, Section
from bench_util import REPO, TIMES, child_env, fmt_seconds, last_line, run_child

START_LIMIT_S = 300.0  # how long a server may take to load its model and answer


def module_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "optinspect", *args]


def ask_status(path: Path) -> dict[str, Any] | None:
    """The server's answer to the ``status`` request ``serve --status`` sends; None if none."""
    from optinspect.serve.wire import WireError, receive, send

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(path))
            send(sock, {"op": "status"})
            answer = receive(sock)
    except (OSError, WireError):
        return None
    return answer.get("status") if answer else None


def through_server(model: str, quant: str, argvs: dict, calls: tuple[int, int]) -> tuple:
    """A fresh server in its own runtime folder: its start-up, one ``serve --status``, the
    calls, its status after them, and how ``serve --stop`` ended it."""
    runtime = Path(tempfile.mkdtemp(prefix="oi-"))
    env = child_env(XDG_RUNTIME_DIR=str(runtime), TMPDIR=str(runtime))
    sock, started = runtime / "optinspect" / "server.sock", time.perf_counter()
    argv = module_argv("serve", "--model", model, "--quant", quant, "--idle", "30m")
    try:
        with tempfile.TemporaryFile() as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
            try:
                while (status := ask_status(sock)) is None:
                    if proc.poll() is not None or time.perf_counter() - started > START_LIMIT_S:
                        log.seek(0)
                        raise RuntimeError(f"no answer: {last_line(log.read().decode())}")
                    time.sleep(0.05)
                if status.get("pid") != proc.pid:
                    raise RuntimeError(f"another server answered on {sock}: {status}")
                startup = time.perf_counter() - started
                asked = run_child(module_argv("serve", "--status", "--format", "json"), env)
                served = measure(argvs, *calls, env=env)
                status = ask_status(sock) or {}
                stop = run_child(module_argv("serve", "--stop"), env)
                proc.wait(timeout=60)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    finally:
        shutil.rmtree(runtime, ignore_errors=True)
    stopped = f"stopped by `serve --stop` in {stop.seconds:.2f} s, exit {proc.returncode}"
    if stop.returncode != 0:
        stopped = f"`serve --stop` exited {stop.returncode}: {last_line(stop.stderr)}"
    return startup, asked, served, status, stopped


def serve_rows(label: str, model: str, quant: str, commands: tuple, calls: tuple) -> list[Row]:
    """Local loads first (no server runs then), then the same calls through a server.
    ``calls``: (timed calls through the server, untimed rounds first, local calls)."""
    through, warmup, local = calls
    args = ("--model", model, "--quant", quant, "--format", "json")
    argvs = {c: module_argv(c, E2E_TEXT, *args) for c in commands}
    here = measure({c: [*argv, "--no-server"] for c, argv in argvs.items()}, local, 0)
    startup, asked, served, status, stopped = through_server(model, quant, argvs, calls[:2])
    how = (
        f"{through} calls through the server after {warmup} untimed round(s), round-robin; "
        f"{local} local calls with `--no-server`, each loading the model; spawn to exit"
    )
    rows, name = [], f"{label}, `--quant {quant}`"
    for command, s in served.items():
        loc: Runs = here[command]
        value = f"served {s.value(False)}; local {loc.value(False)}"
        if s.runs and loc.runs:
            times = statistics.median(loc.times) / statistics.median(s.times)
            same = "yes" if len({r.stdout for r in s.runs + loc.runs}) == 1 else "**no**"
            value += f"; local / served {times:.1f}{TIMES}; same output: {same}"
        row = Row(f"{name}: `{command}`", value, how)
        if model == "tiny" and quant == "none" and command == "trace" and s.runs:
            met = statistics.median(s.times) < 0.5
            row = Row(row.figure, value, how, "< 0.5 s wall through the server", met)
        rows.append(row)
    expected = sum(len(r.runs) + (warmup if r.runs else 0) for r in served.values())
    rss = status.get("memory", {}).get("rss") or 0
    value = f"start-up {fmt_seconds(startup)}; `serve --status` {fmt_seconds(asked.seconds)}; "
    value += f"RSS {rss / 2**20:.0f} MiB; requests {status.get('requests')} of {expected}; "
    how = (
        "launch until the socket answers a `status` request (polled every 50 ms); "
        "`serve --status --format json` timed once; the requests the server counted"
    )
    return [*rows, Row(f"{name}: the server", value + stopped, how)]


def serve(models: list[tuple[str, str, str, tuple]], calls: tuple[int, int, int]) -> Section:
    """Each (label, --model, quant, commands); one that fails keeps its error in its row."""
    rows = []
    for label, model, quant, commands in models:
        try:
            rows += serve_rows(label, model, quant, commands, calls)
        except Exception as e:
            failed = f"failed: `{type(e).__name__}: {last_line(str(e))}`"
            rows.append(Row(f"{label}, `--quant {quant}`", failed))
    return Section("serve", rows)
