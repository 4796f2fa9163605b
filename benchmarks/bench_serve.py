"""``optinspect serve`` against a local load: every call a whole ``python -m optinspect`` process.

The server runs in its own private, short ``XDG_RUNTIME_DIR`` (a Unix socket path holds
about 104 bytes), and the same folder is its ``TMPDIR`` (where the one lock per user
lives), so a server of the user's is neither used nor disturbed; it is stopped
with ``serve --stop`` at the end and killed on any error.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bench_cli import E2E_TEXT, CommandResult, child_env, measure
from bench_util import REPO, ChildRun, last_line, load_1min, run_child

#: How long a server may take to load its model and answer.
START_LIMIT_S = 300.0
#: Labels of the models ``serve_round_trips`` knows, by the name a plan gives.
MODEL_LABELS = {"tiny": "tiny", "125m": "opt-125m shape, random weights, saved to a temp folder"}


@dataclass
class RoundTrip:
    """One model and quantization: the server's start-up and each command both ways."""

    model: str
    quant: str
    served: dict[str, CommandResult] = field(default_factory=dict)
    local: dict[str, CommandResult] = field(default_factory=dict)
    startup_s: float | None = None
    status_run: ChildRun | None = None  # ``serve --status --format json``, once it answers
    status: dict[str, Any] | None = None  # the server's status after the served calls
    expected_requests: int = 0
    stopped: str = ""
    error: str | None = None
    load: tuple[float | None, float | None] = (None, None)  # 1-minute load: start, end

    def same_output(self, command: str) -> bool | None:
        """Whether every served and local call printed the same bytes; None without both."""
        served, local = self.served.get(command), self.local.get(command)
        if served is None or local is None or not served.runs or not local.runs:
            return None
        return len({run.stdout for run in served.runs + local.runs}) == 1


def module_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "optinspect", *args]


def call_argv(command: str, model: str, quant: str) -> list[str]:
    return module_argv(command, E2E_TEXT, "--model", model, "--quant", quant, "--format", "json")


def ask_status(path: Path) -> dict[str, Any] | None:
    """The server's answer to the ``status`` request ``serve --status`` sends; None if none."""
    from optinspect.serve.wire import WireError, receive, send

    if not path.exists():
        return None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(path))
            send(sock, {"op": "status"})
            answer = receive(sock)
    except (OSError, WireError):
        return None
    return answer.get("status") if answer else None


class Server:
    """``optinspect serve`` in a subprocess, in a runtime folder of its own."""

    def __init__(self, model: str, quant: str, runtime: Path, log: IO[bytes]) -> None:
        self.env = {**child_env(), "XDG_RUNTIME_DIR": str(runtime), "TMPDIR": str(runtime)}
        self.socket = runtime / "optinspect" / "server.sock"
        self.log = log
        argv = module_argv("serve", "--model", model, "--quant", quant, "--idle", "30m")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            argv, stdout=self.log, stderr=subprocess.STDOUT, env=self.env, cwd=REPO
        )

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def wait_ready(self) -> float:
        """Seconds from launch until the socket answers a status request."""
        while (answer := ask_status(self.socket)) is None:
            if self.proc.poll() is not None:
                message = last_line(self.output())
                raise RuntimeError(f"optinspect serve exited {self.proc.returncode}: {message}")
            if time.perf_counter() - self.started > START_LIMIT_S:
                raise TimeoutError(f"optinspect serve did not answer in {START_LIMIT_S:.0f} s")
            time.sleep(0.05)
        if answer.get("pid") != self.proc.pid:
            raise RuntimeError(f"another server answered on {self.socket}: {answer}")
        return time.perf_counter() - self.started

    def stop(self) -> str:
        """``serve --stop``; what happened, in a few words. The process is gone after it."""
        try:
            run = run_child(module_argv("serve", "--stop"), self.env)
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return f"did not stop in 60 s after `serve --stop` (exit {run.returncode}): killed"
        if run.returncode != 0:
            return f"`serve --stop` exited {run.returncode}: {last_line(run.stderr)}"
        return f"stopped by `serve --stop` in {run.seconds:.2f} s, exit {self.proc.returncode}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def served(model: str, quant: str) -> Iterator[Server]:
    """A running server in a new runtime folder; killed (not asked) if the block fails, and
    the folder removed in any case. A short folder: a socket path holds about 104 bytes."""
    runtime = Path(tempfile.mkdtemp(prefix="oi-"))
    try:
        with tempfile.TemporaryFile() as log:
            server = Server(model, quant, runtime, log)
            try:
                yield server
            finally:
                server.kill()
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


def round_trip(
    label: str,
    model: str,
    quant: str,
    commands: Sequence[str],
    calls: tuple[int, int, int],
) -> RoundTrip:
    """Local loads first (no server runs then), then the same calls through a server.

    ``calls``: (calls through the server, warm-up calls through it, local calls).
    """
    through, warmup, local = calls
    result = RoundTrip(label, quant)
    started_at = load_1min()
    argvs = {command: call_argv(command, model, quant) for command in commands}
    result.local = measure({c: [*argv, "--no-server"] for c, argv in argvs.items()}, local, 0)
    with served(model, quant) as server:
        result.startup_s = server.wait_ready()
        result.status_run = run_child(
            module_argv("serve", "--status", "--format", "json"), server.env
        )
        result.served = measure(argvs, through, warmup, env=server.env)
        result.expected_requests = sum(
            len(r.runs) + (warmup if r.runs else 0) for r in result.served.values()
        )
        result.status = ask_status(server.socket)
        result.stopped = server.stop()
    result.load = (started_at, load_1min())
    return result


@contextlib.contextmanager
def model_folder(name: str) -> Iterator[str]:
    """What ``--model`` gets for a plan's model name; a checkpoint is removed afterwards."""
    if name == "tiny":
        yield "tiny"
        return
    import bench_models

    folder = Path(tempfile.mkdtemp(prefix="oi-model-"))
    try:
        shape = getattr(bench_models, f"OPT_{name.upper()}")
        yield str(bench_models.save_checkpoint(shape, folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def serve_round_trips(
    models: Sequence[tuple[str, str, Sequence[str]]], calls: tuple[int, int, int]
) -> dict[str, Any]:
    """Each (model name, quant, commands) of the plan; one that fails keeps its error."""
    rows = []
    for name, quant, commands in models:
        label = MODEL_LABELS.get(name, name)
        try:
            with model_folder(name) as model:
                rows.append(round_trip(label, model, quant, commands, calls))
        except Exception as e:
            failed = RoundTrip(label, quant)
            failed.error = f"{type(e).__name__}: {last_line(str(e))}"
            rows.append(failed)
    through, warmup, local = calls
    return {"rows": rows, "served_calls": through, "warmup": warmup, "local_calls": local}
