"""The client side: find this user's server, check that it holds the model asked for,
send it a job and turn its frames back into results. No torch, no transformers.

A socket nobody answers on (the server was killed) is removed, with one note, and
the command loads the model itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import EXIT_RUNTIME, OptinspectError, UsageError
from .place import find_socket
from .wire import WireError, decode, encode, receive, send

if TYPE_CHECKING:
    from ..commands.jobs import Context, Job
    from ..commands.options import LoadOptions

__all__ = [
    "RemoteError",
    "Server",
    "ServerGone",
    "connect",
    "find_server",
    "job_from",
    "job_message",
    "open_socket",
    "protocol",
    "request",
]

#: How long the first answer may take before the server is taken for stuck.
HELLO_TIMEOUT = 10.0


def protocol() -> str:
    """What client and server must share: the package version (its records and jobs)."""
    from .. import __version__

    return __version__


class ServerGone(Exception):
    """The server stopped before it sent a result: the job can still run here."""


class RemoteError(OptinspectError):
    """An error the server met while running a job, told as a local run tells it."""

    def __init__(self, message: str, exit_code: int, *, hint: bool, trace: str | None) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.hint = hint  # a local run would add "Run again with --debug"
        self.trace = trace  # the server's traceback, shown with --debug


def note(text: str) -> None:
    sys.stderr.write(f"note: {text}\n")
    sys.stderr.flush()


def connect(path: Path | None = None, *, then: str | None = "loading here") -> socket.socket | None:
    """A connection to the server, or None when none is running or its folder is not
    private (said in a note, as is a dead server's socket: see ``open_socket``)."""
    try:
        return open_socket(path, then=then)
    except UsageError as e:
        note(f"{e}; not using a server")
        return None


def open_socket(path: Path | None = None, *, then: str | None = None) -> socket.socket | None:
    """A connection to the server at ``path`` (by default, this user's: ``find_socket``),
    or None when none is running. Raises ``UsageError`` when its folder is not private.

    A socket that refuses connections is a dead server's: it is removed, with a note
    that ends with ``then`` (what happens instead; no note when None).
    """
    path = path or find_socket()
    if path is None or not path.exists():
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        sock.close()
        if path.exists():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            if then is not None:
                note(f"the optinspect server is gone (removed its stale socket {path}); {then}")
        return None
    return sock


def find_server(load: LoadOptions) -> Server | None:
    """A server holding the model ``load`` asks for, or None (the command loads it here)."""
    sock = connect()
    if sock is None:
        return None
    try:
        sock.settimeout(HELLO_TIMEOUT)
        send(sock, {"op": "hello", "protocol": protocol(), "settings": load.settings()})
        answer = receive(sock)
        sock.settimeout(None)
    except (OSError, WireError):
        sock.close()
        note("the optinspect server did not answer; loading here")
        return None
    if not answer or not answer.get("match"):
        sock.close()
        return None
    return Server(sock)


class Server:
    """A connection to a server that holds the job's model."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def run(self, job: Job, here: Context) -> Iterator[Any]:
        """Send ``job`` and yield its results as they come; return its tail. Its progress
        and notes go to ``here``, the client's own display.

        Raises ``ServerGone`` when the server ends before the first result.
        """
        with self.sock:
            try:
                send(self.sock, {"op": "run", "job": job_message(job)})
            except OSError as e:
                raise ServerGone("it closed the connection") from e
            sent_any = False
            while True:
                try:
                    message = receive(self.sock)
                except (OSError, WireError) as e:
                    message = None if not sent_any else {"lost": str(e)}
                if message is None or "lost" in message or "gone" in message:
                    if not sent_any:
                        raise ServerGone((message or {}).get("gone", "it stopped"))
                    raise OptinspectError("the optinspect server stopped in the middle of this run")
                if "progress" in message:
                    here.advance(*message["progress"])
                elif "note" in message:
                    here.note(message["note"])
                elif "result" in message:
                    sent_any = True
                    yield decode(message["result"])
                elif "error" in message:
                    raise RemoteError(
                        message["error"],
                        int(message.get("exit", EXIT_RUNTIME)),
                        hint=bool(message.get("hint")),
                        trace=message.get("traceback"),
                    )
                elif "done" in message:
                    return decode(message["done"])


def job_message(job: Job) -> dict[str, Any]:
    """The job as a frame's payload; sentences keep where they came from."""
    texts = None
    if job.texts is not None:
        texts = [[str(t), getattr(t, "where", None)] for t in job.texts]
    return {
        "command": job.command,
        "load": dataclasses.asdict(job.load),
        "checks": encode(job.checks),
        "params": encode(job.params),
        "texts": texts,
        "umask": job.umask,
        "cwd": os.getcwd(),
    }


def job_from(message: dict[str, Any]) -> Job:
    """The job a frame's payload describes (the server's side of ``job_message``)."""
    from ..commands.jobs import Job
    from ..commands.options import LoadOptions
    from ..engine.inputs import Line

    texts = message["texts"]
    if texts is not None:
        texts = [Line(text, where) if where is not None else text for text, where in texts]
    return Job(
        command=message["command"],
        load=LoadOptions(**message["load"]),
        checks=decode(message["checks"]),
        params=decode(message["params"]),
        texts=texts,
        umask=message["umask"],
        cwd=message["cwd"],
    )


def request(op: str, path: Path | None = None) -> dict[str, Any] | None:
    """A one-off request (``status``, ``stop``) to the running server; None when none runs
    (a dead server's socket is removed without a word). Raises ``UsageError`` when the
    server's folder is not private: whether a server runs there is not known."""
    sock = open_socket(path)
    if sock is None:
        return None
    with sock:
        try:
            sock.settimeout(HELLO_TIMEOUT if op == "status" else None)
            send(sock, {"op": op})
            return receive(sock)
        except (OSError, WireError):
            return None
