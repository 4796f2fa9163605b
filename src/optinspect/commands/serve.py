"""``optinspect serve``: keep one model loaded and answer the model commands from it."""

from __future__ import annotations

import contextlib
import re
import sys
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .options import Format, LoadOptions, format_option, model_command

if TYPE_CHECKING:
    from ..model.loading import LoadedModel
    from ..serve.place import Holder

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h)?")
_UNITS = {"s": 1, "m": 60, "h": 3600, None: 1}


def parse_duration(text: str) -> float | None:
    """Seconds in ``90s``, ``30m``, ``2h`` or ``45`` (seconds); None for ``0`` (never)."""
    from ..errors import UsageError

    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise UsageError(f"--idle {text!r} is not a duration: give e.g. 90s, 30m, 2h or 0 (never)")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    return seconds or None


#: How --status prints.
StatusFormatOpt = format_option(
    Format.table, Format.json, help="How --status prints: lines for people, json for scripts."
)


@model_command(serves=False)
def serve_command(
    idle: Annotated[
        str,
        typer.Option(
            "--idle",
            metavar="DURATION",
            help="Stop after this long without a request: 90s, 30m, 2h, or 0 for never.",
        ),
    ] = "30m",
    stop: Annotated[
        bool, typer.Option("--stop", help="Stop the running server (after its current job).")
    ] = False,
    status: Annotated[
        bool,
        typer.Option(
            "--status", help="Show the running server's model, settings, uptime and memory."
        ),
    ] = False,
    fmt: StatusFormatOpt = Format.table,
    *,
    load: LoadOptions,
) -> None:
    """Load a model once and answer every model command from it, until idle or stopped.

    trace, lens, attention, compare, outliers, calibrate and params --loaded use a
    running server when its model and loading options are the ones they ask for;
    their output is the same as a local run's, byte for byte. Otherwise, or with
    --no-server, they load the model themselves. The server listens on a Unix socket
    in $XDG_RUNTIME_DIR/optinspect/ (or a 0700 folder in the temp dir) and answers its
    own user only; jobs run one at a time, in order.

    Examples:

    \b
      optinspect serve --model facebook/opt-6.7b --quant 8bit &
      optinspect trace "The capital of France is" -m facebook/opt-6.7b --layer 5
      optinspect serve --status
      optinspect serve --stop
    """
    from ..errors import UsageError

    if stop and status:
        raise UsageError("give --stop or --status, not both")
    if stop or status:
        _ask("stop" if stop else "status", fmt)
        return
    seconds = parse_duration(idle)
    _serve(load, seconds)


def _ask(op: str, fmt: Format) -> None:
    from ..errors import OptinspectError
    from ..serve.client import request
    from ..serve.place import find_socket, socket_path

    path = find_socket()  # a folder that is not private is an error: it cannot be asked
    answer = request(op, path) if path is not None else None
    if path is None or answer is None:
        raise OptinspectError(f"no optinspect server is running (no socket at {socket_path()})")
    if op == "stop":
        if _wait_until_gone(path):
            sys.stderr.write("stopped the optinspect server\n")
        else:
            sys.stderr.write("the optinspect server stops when its current job ends\n")
        return
    state = answer["status"]
    if fmt is Format.json:
        from ..render.common import write_json

        write_json(sys.stdout, state)
        return
    for key, value in _status_lines(state):
        sys.stdout.write(f"{key}: {value}\n")


def _wait_until_gone(path: Any, limit: float = 30.0) -> bool:
    """Whether the socket went away (the server ended) within ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return not path.exists()


def _status_lines(state: dict[str, Any]) -> list[tuple[str, str]]:
    from ..render.common import format_bytes

    memory = state["memory"]
    parts = [f"{format_bytes(memory['rss'])} resident"] if memory.get("rss") is not None else []
    if "cuda_allocated" in memory:
        parts.append(f"{format_bytes(memory['cuda_allocated'])} on CUDA")
    resolved = state["resolved"]
    limit = state["idle_limit_s"]
    lines = [
        ("model", state["model"] + (" (random weights)" if resolved["random_weights"] else "")),
        ("quant", state["quant"]),
        ("device", f"{resolved['device']} (asked: {state['device']})"),
        ("dtype", f"{resolved['dtype']} (asked: {state['dtype']})"),
    ]
    for key in ("device_map", "max_memory", "offload_dir"):
        if state[key] is not None:
            lines.append((key.replace("_", "-"), state[key]))
    lines += [
        ("pid", str(state["pid"])),
        ("socket", state["socket"]),
        ("uptime", _duration(state["uptime_s"])),
        ("requests", f"{state['requests']} ({state['running']} running or waiting)"),
        ("idle limit", _duration(limit) if limit else "none"),
        ("memory", ", ".join(parts) or "unknown"),
    ]
    return lines


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m {secs}s"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


#: The signals that stop the server as ``serve --stop`` does, and the reason it logs.
_STOPPING_SIGNALS = {"SIGTERM": "terminated", "SIGHUP": "hung up"}


class _Signalled(BaseException):
    """SIGTERM or SIGHUP before the server serves: the load is abandoned (a
    ``BaseException``, as Ctrl-C's, so that no ``except Exception`` of a library keeps it)."""


def _serve(load: LoadOptions, idle: float | None) -> None:
    import signal

    from ..errors import OptinspectError
    from ..serve.place import claim, holder, private_dir, socket_path
    from ..serve.server import ModelServer
    from .common import load_with_status

    private_dir(create=True)
    path = socket_path()
    lock = claim()  # held until the server stops, or this process ends
    if lock is None:
        raise OptinspectError(
            f"a server is already running {_who(holder())}: stop it with optinspect serve --stop"
        )
    server = None

    def on_signal(signum: int, frame: object) -> None:
        reason = _STOPPING_SIGNALS[signal.Signals(signum).name]
        if server is None:
            raise _Signalled(reason)
        server.stop(reason)  # after the job that runs, as serve --stop

    before = {}
    for name in _STOPPING_SIGNALS:
        number = getattr(signal, name, None)
        # nohup ignores SIGHUP so that the server outlives its terminal: so be it.
        if number is not None and signal.getsignal(number) is not signal.SIG_IGN:
            before[number] = signal.signal(number, on_signal)
    try:
        try:
            lock.name(path)
            loaded = _load(load)
            path.unlink(missing_ok=True)  # a dead server's: the lock says none other runs
            # Another setting a job asks for (compare's reference) loads behind the spinner.
            server = ModelServer(path, load, loaded, idle=idle, loader=load_with_status)
            limit = f"stops after {_duration(idle)} idle" if idle else "no idle limit"
            sys.stderr.write(
                f"serving {loaded.name} ({loaded.quant}, {loaded.device}, "
                f"{loaded.dtype_name}) on {path}; {limit}\n"
            )
            sys.stderr.flush()
            reason = server.serve()
        except KeyboardInterrupt:
            reason = "interrupted"
        except _Signalled as signalled:
            reason = str(signalled)
    finally:
        for number, handler in before.items():
            signal.signal(number, handler)
        lock.release()
    served = server.served if server is not None else 0
    with contextlib.suppress(OSError):  # the terminal that SIGHUP came from is gone
        sys.stderr.write(f"optinspect serve: {reason}; {served} requests served\n")
        sys.stderr.flush()


def _who(named: Holder | None) -> str:
    """The running server, as a second ``serve`` names it: ``(pid 12, tiny)``."""
    from ..serve.client import request

    if named is None:
        return "(still loading its model)"
    running = request("status", named.socket) if named.socket.exists() else None
    if running is not None and "status" in running:
        return f"(pid {running['status']['pid']}, {running['status']['model']})"
    return f"(pid {named.pid}, still loading its model)"


def _load(load: LoadOptions) -> LoadedModel:
    from ..engine.preflight import preflight

    preflight(load)
    return load.load()
