"""The client side: find this user's server, check that it holds the model asked for,
send it a job and turn its frames back into results. No torch, no transformers.

A socket nobody answers on (the server was killed) is removed, with one note, and
the command loads the model itself. A job's sentences go to the server in frames
once it starts the job, read as they are sent, so the client never holds its whole
input.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import socket
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..analyses.job import Job
from ..errors import EXIT_RUNTIME, OptinspectError, UsageError
from ..model.settings import LoadSettings
from .place import find_socket
from .wire import WireError, decode, encode, receive, send

if TYPE_CHECKING:
    from ..analyses.job import Context

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
    "sentence_rows",
    "sentences_of",
]

#: How long the first answer may take before the server is taken for stuck.
HELLO_TIMEOUT = 10.0
#: The most sentences, and about the most bytes, one frame of a job's input holds.
FRAME_SENTENCES = 64
FRAME_BYTES = 1 << 18


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


def find_server(load: LoadSettings) -> Server | None:
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
        and notes go to ``here``, the client's own display; its sentences go to the
        server once it starts the job.

        Raises ``ServerGone`` when the server ends before the first result and before
        any sentence was read from the input, which is then whole to run here.
        """
        feed: _Feed | None = None
        try:
            try:
                send(self.sock, {"op": "run", "job": job_message(job)})
            except OSError as e:
                raise ServerGone("it closed the connection") from e
            sent_any = False
            while True:
                try:
                    message = receive(self.sock)
                except (OSError, WireError):
                    message = None
                if message is None or "gone" in message:
                    if feed is not None and feed.error is not None:
                        raise feed.error  # the input's own error, as a local run tells it
                    if not sent_any and (feed is None or feed.taken == 0):
                        raise ServerGone((message or {}).get("gone", "it stopped"))
                    raise OptinspectError("the optinspect server stopped in the middle of this run")
                if "progress" in message:
                    here.advance(*message["progress"])
                elif "note" in message:
                    here.note(message["note"])
                elif "queued" in message:
                    here.note(f"waiting for the server: {message['queued']}")
                elif "started" in message:
                    if job.texts is not None:
                        feed = _Feed(self.sock, job.texts)
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
        finally:
            if feed is not None:
                feed.stop()
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)  # wakes a feed blocked in sending
            self.sock.close()


#: What the feed's reader hands its sender after the last sentence.
_END = object()


class _Feed:
    """A job's sentences, sent to the server in frames as they are read: one thread
    reads the input, another sends what has been read, as soon as it is read, in
    frames of up to ``FRAME_SENTENCES``. The queue between them holds at most that
    many more, so the client holds a few frames of the input, never the whole of it.

    Frames: ``{"texts": [[text, where], ...]}``, then ``{"end": true}``; or
    ``{"abort": true}`` when the input cannot be read (``error`` then holds why).
    """

    def __init__(self, sock: socket.socket, texts: Iterable[str]) -> None:
        self.taken = 0  # sentences read from the input
        self.error: Exception | None = None
        self._lines: queue.Queue[Any] = queue.Queue(maxsize=FRAME_SENTENCES)
        self._stopped = threading.Event()
        threading.Thread(target=self._read, args=(texts,), daemon=True).start()
        threading.Thread(target=self._send, args=(sock,), daemon=True).start()

    def stop(self) -> None:
        self._stopped.set()

    def _read(self, texts: Iterable[str]) -> None:
        try:
            for text in texts:
                self.taken += 1
                if not self._put(text):
                    return
        except Exception as e:  # a line that cannot be read: the run ends with its error
            self._put(e)
        else:
            self._put(_END)

    def _put(self, item: Any) -> bool:
        while not self._stopped.is_set():
            with contextlib.suppress(queue.Full):
                self._lines.put(item, timeout=0.1)
                return True
        return False

    def _take(self, wait: bool) -> Any:
        """The next item read, waiting for it when ``wait``; None when there is none."""
        while not self._stopped.is_set():
            try:
                return self._lines.get(timeout=0.1 if wait else None, block=wait)
            except queue.Empty:
                if not wait:
                    return None
        return None

    def _send(self, sock: socket.socket) -> None:
        item = self._take(wait=True)
        try:
            while item is not None:
                chunk: list[str] = []
                size = 0
                while isinstance(item, str) and len(chunk) < FRAME_SENTENCES and size < FRAME_BYTES:
                    chunk.append(item)
                    size += len(item)
                    item = self._take(wait=False)
                if chunk:
                    send(sock, {"texts": sentence_rows(chunk)})
                if item is _END:
                    send(sock, {"end": True})
                    return
                if isinstance(item, Exception):
                    self.error = item
                    send(sock, {"abort": True})
                    return
                if item is None:
                    item = self._take(wait=True)
        except OSError:
            return  # the server went away: the client hears it on the socket


def sentence_rows(texts: Iterable[str]) -> list[list[str | None]]:
    """Sentences as a frame holds them: each with where it came from (None for TEXT)."""
    return [[str(t), getattr(t, "where", None)] for t in texts]


def sentences_of(rows: list[list[str | None]]) -> list[str]:
    """The sentences ``sentence_rows`` gave (the server's side)."""
    from ..engine.inputs import Line

    return [Line(str(text), where) if where is not None else str(text) for text, where in rows]


def job_message(job: Job) -> dict[str, Any]:
    """The job as a frame's payload; ``texts`` says whether sentences follow in frames."""
    return {
        "command": job.command,
        "load": {f.name: getattr(job.load, f.name) for f in dataclasses.fields(LoadSettings)},
        "checks": encode(job.checks),
        "params": encode(job.params),
        "texts": job.texts is not None,
        "umask": job.umask,
        "cwd": os.getcwd(),
    }


def job_from(message: dict[str, Any], texts: Iterable[str] | None) -> Job:
    """The job a frame's payload describes (the server's side of ``job_message``), with
    ``texts`` for its sentences when the client has some to send."""
    return Job(
        command=message["command"],
        load=LoadSettings(**message["load"]),
        checks=decode(message["checks"]),
        params=decode(message["params"]),
        texts=texts if message["texts"] else None,
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
