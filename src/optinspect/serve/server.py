"""The server: one model, loaded once, answering jobs on a private Unix socket.

Built on ``socketserver.ThreadingUnixStreamServer``: each connection has a thread, so
``status`` answers while a job runs, but jobs take turns in order of arrival, so one
forward runs at a time. A client that goes away (Ctrl-C) cancels its job
between batches. Peers of another uid are refused (``SO_PEERCRED``), besides the 0700
directory and the 0600 socket (Linux; elsewhere the folder alone keeps others out). The
server stops after ``idle`` seconds without a request, on ``serve --stop``, SIGTERM or
SIGHUP (after the job that runs), or on Ctrl-C, and removes its socket.

Messages (``wire`` frames), client to server:

- ``{"op": "hello", "protocol", "settings"}``: answered ``{"match": bool, "server": {...}}``.
- ``{"op": "run", "job": {...}}`` after a matching hello: answered ``{"queued": why}``
  when it waits for another job, then ``{"gone": reason}`` when the server turns it down
  (it is stopping), or ``{"started": true}`` when it runs: from then on the client sends
  the job's sentences (``{"texts": [[text, where], ...]}`` frames, then ``{"end": true}``,
  or ``{"abort": true}`` when its input cannot be read), and the server answers any
  number of ``{"progress": [sentences, tokens, totals]}``, ``{"note": line}`` and
  ``{"result": record}``, then ``{"done": tail}`` or
  ``{"error": line, "exit": code, "hint": bool, "traceback"}``.
- ``{"op": "status"}``: ``{"status": {...}}``. ``{"op": "stop"}``: ``{"stopping": true}``.

A job runs in the client's working folder, with its umask, and names the model as the
client spelled it, so paths and output are what a local run would give.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import select
import socket
import socketserver
import struct
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..analyses.job import execute
from ..errors import OptinspectError, UsageError, describe
from ..model.settings import LoadSettings
from .client import job_from, protocol, sentences_of
from .wire import WireError, encode, receive, send

if TYPE_CHECKING:
    from ..model.loading import LoadedModel

    #: Loads the model ``settings`` say, with an ``attn_implementation`` or None.
    Loader = Callable[..., LoadedModel]

__all__ = ["ModelServer", "peer_uid"]

#: What a job that waits for its turn is told.
QUEUED = "another job is running"


class Cancelled(Exception):
    """The client went away: the job stops between batches."""


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end, where the system tells it (Linux)."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    credentials = sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", credentials)
    return int(uid)


def _hung_up(sock: socket.socket) -> bool:
    """Whether the client closed its end (it sends nothing while a job runs)."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


class Turns:
    """A lock taken in the order it was asked for (``threading.Lock`` is not fair)."""

    def __init__(self) -> None:
        self._ready = threading.Condition()
        self._next = 0  # the next ticket handed out
        self._serving = 0  # the ticket whose turn it is

    @contextlib.contextmanager
    def turn(self, waiting: Callable[[], None] | None = None) -> Iterator[None]:
        """Hold the turn for the block; ``waiting`` is called once when another holds it
        or is ahead."""
        with self._ready:
            ticket = self._next
            self._next += 1
            if self._serving != ticket and waiting is not None:
                waiting()
            while self._serving != ticket:
                self._ready.wait()
        try:
            yield
        finally:
            with self._ready:
                self._serving += 1
                self._ready.notify_all()


class ModelServer(socketserver.ThreadingUnixStreamServer):
    """Serves ``loaded`` (loaded with ``load``) on ``path`` until idle or stopped.

    A job that asks for other settings (compare's reference) has its model loaded by
    ``loader`` (by default ``model.loading.load_from_settings``), for that job only.
    """

    daemon_threads = True
    #: Seconds between checks of the idle limit.
    tick = 0.5

    def __init__(
        self,
        path: Path,
        load: LoadSettings,
        loaded: LoadedModel,
        *,
        idle: float | None,
        loader: Loader | None = None,
    ) -> None:
        self.path = path
        self.load = load
        self.loader = loader
        self.settings = load.settings()  # now: jobs change the working folder
        self.loaded = loaded
        self.idle = idle
        self.started = time.time()
        self.last = time.monotonic()
        self.served = 0
        self.active = 0
        self.stopping: str | None = None
        self.turns = Turns()  # one job at a time, in order of arrival
        self.state = threading.Lock()  # the counters above
        mask = os.umask(0o177)  # the socket is created 0600
        try:
            super().__init__(str(path), _Handler)
        finally:
            os.umask(mask)
        os.chmod(path, 0o600)
        self._inode = os.stat(path).st_ino

    def verify_request(self, request: Any, client_address: Any) -> bool:
        uid = peer_uid(request)
        if uid is not None and uid != os.getuid():
            with contextlib.suppress(OSError):
                send(request, {"error": "refused: the server answers its own user only"})
            return False
        return True

    def serve(self) -> str:
        """Serve until stopped; the reason it stopped."""
        watcher = threading.Thread(target=self._watch, daemon=True)
        watcher.start()
        try:
            self.serve_forever(poll_interval=self.tick)
        finally:
            self.server_close()
            self._remove_socket()
        return self.stopping or "stopped"

    def _remove_socket(self) -> None:
        """Remove the socket, if it is still this server's (not one bound since)."""
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self._inode:
                self.path.unlink()

    def stop(self, reason: str) -> None:
        """Stop once the job that runs now has finished; from any thread but the serving one.

        Jobs waiting for their turn are answered ``gone``: their clients run them."""

        def finish() -> None:
            with self.turns.turn(), self.state:
                if self.stopping is None:
                    self.stopping = reason
            self.shutdown()

        threading.Thread(target=finish, daemon=True).start()

    def _watch(self) -> None:
        while self.stopping is None:
            time.sleep(self.tick)
            with self.state:
                quiet = time.monotonic() - self.last
                idle = self.active == 0 and self.idle is not None and quiet >= self.idle
            if idle:
                self.stop("idle")
                return

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """A request in progress: the idle clock does not run."""
        with self.state:
            self.active += 1
            self.last = time.monotonic()
        try:
            yield
        finally:
            with self.state:
                self.active -= 1
                self.last = time.monotonic()

    def hello(self, message: dict[str, Any]) -> dict[str, Any]:
        with self.state:  # a run follows at once: the idle clock starts again from here
            self.last = time.monotonic()
        match = message.get("protocol") == protocol() and message.get("settings") == self.settings
        return {"match": match, "server": {"pid": os.getpid(), **self.settings}}

    def status(self) -> dict[str, Any]:
        info = self.loaded.info.as_dict()
        return {
            **self.settings,
            "resolved": {key: info[key] for key in ("device", "dtype", "random_weights")},
            "pid": os.getpid(),
            "socket": str(self.path),
            "uptime_s": round(time.time() - self.started, 1),
            "requests": self.served,
            "running": self.active,
            "idle_limit_s": self.idle,
            "memory": _memory(self.loaded),
        }

    def run(self, sock: socket.socket, message: dict[str, Any]) -> None:
        """Run one job for the client on ``sock`` when its turn comes; its frames drain
        to the client after the turn, so a slow reader holds up no one else."""
        job = _Job(self, sock)
        with self.busy():
            try:
                with self.turns.turn(waiting=job.queued):
                    if self.stopping is not None:
                        job.refuse(f"the server is stopping ({self.stopping})")
                    elif not _hung_up(sock):  # else the client left while it waited
                        with self.state:
                            self.served += 1
                        job.run(message)
            finally:
                job.drain()


class _Handler(socketserver.BaseRequestHandler):
    server: ModelServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        try:
            while True:
                message = receive(sock)
                if message is None:
                    return
                op = message.get("op")
                if op == "hello":
                    send(sock, self.server.hello(message))
                elif op == "run":
                    self.server.run(sock, message)
                    return
                elif op == "status":
                    send(sock, {"status": self.server.status()})
                    return
                elif op == "stop":
                    self.server.stop("stopped")
                    send(sock, {"stopping": True})
                    return
                else:
                    send(sock, {"error": f"unknown request {op!r}"})
                    return
        except (OSError, WireError):
            return  # the client went away or spoke nonsense: only its connection ends


#: The end of a job's frames, for its sender.
_END = None


class _Job:
    """One job's run on the server: the context its compute function sees.

    Frames go to an outbox that a thread of the job's own sends, so the forward
    passes never wait on the client's reading; a client that is gone stops the job.
    """

    def __init__(self, server: ModelServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.outbox: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        self.broken = False
        self.sender = threading.Thread(target=self._send_all, daemon=True)
        self.sender.start()
        self._restore: list[Callable[[], None]] = []
        self._spelling = server.load.model

    def model(self, *, attn_implementation: str | None = None, **changes: Any) -> LoadedModel:
        wanted = dataclasses.replace(self.server.load, model=self._spelling, **changes)
        if wanted.settings() != self.server.settings:
            # compare's reference setting: loaded for this job only, and freed after it
            return self._load(wanted, attn_implementation)
        from ..model.loading import switch_attention

        loaded = self.server.loaded
        restore = switch_attention(loaded, attn_implementation)
        if restore is not None:
            self._restore.append(restore)
        # The model as the client named it (a folder may be spelled another way).
        source = dataclasses.replace(loaded.source, spec=self._spelling)
        return dataclasses.replace(loaded, source=source)

    def _load(self, settings: LoadSettings, attn_implementation: str | None) -> LoadedModel:
        loader = self.server.loader
        if loader is None:
            from ..model.loading import load_from_settings as loader
        return loader(settings, attn_implementation=attn_implementation)

    def advance(self, n: int = 1, t: int = 0, totals: tuple[int, int] | None = None) -> None:
        self._send({"progress": [n, t, list(totals) if totals is not None else None]})

    def note(self, text: str) -> None:
        self._send({"note": text})

    def check_cancelled(self) -> None:
        """Raise ``Cancelled`` when the client went away."""
        if self.broken or _hung_up(self.sock):
            raise Cancelled

    def _send(self, message: dict[str, Any]) -> None:
        self.check_cancelled()
        self.outbox.put(message)

    def _send_all(self) -> None:
        while (message := self.outbox.get()) is not _END:
            if self.broken:
                continue
            try:
                send(self.sock, message)
            except OSError:
                self.broken = True

    def drain(self) -> None:
        """Wait until every frame has gone to the client (or the client is gone)."""
        self.outbox.put(_END)
        self.sender.join()

    def refuse(self, reason: str) -> None:
        """Tell the client to run the job itself."""
        self.outbox.put({"gone": reason})

    def queued(self) -> None:
        """Tell the client that its job waits for another's."""
        self.outbox.put({"queued": QUEUED})

    def texts(self) -> Iterator[str]:
        """The job's sentences, read from the client's frames as the job asks for them;
        ``Cancelled`` when the client goes away or cannot read its input."""
        while True:
            try:
                message = receive(self.sock)
            except (OSError, WireError) as e:
                raise Cancelled from e
            if message is None or "abort" in message:
                raise Cancelled
            if "end" in message:
                return
            try:
                rows = message["texts"]
                texts = sentences_of(rows)
            except (KeyError, TypeError, ValueError) as e:
                raise Cancelled from e  # not a client of this version: nothing to answer
            yield from texts

    def run(self, message: dict[str, Any]) -> None:
        mask = None
        folder = os.getcwd()
        results: Iterator[Any] | None = None
        try:
            try:
                job = job_from(message["job"], self.texts())
                os.chdir(job.cwd)  # relative paths mean what they mean to the client
                if job.load.settings() != self.server.settings:
                    self.refuse("it holds another model")
                    return
            except (KeyError, TypeError, ValueError, OSError) as e:
                self.refuse(f"the job could not be read: {e}")
                return
            self.outbox.put({"started": True})
            self._spelling = job.load.model
            if job.umask is not None:
                mask = os.umask(job.umask)
            results = execute(job, self)
            while True:
                try:
                    result = next(results)
                except StopIteration as end:
                    self._send({"done": encode(end.value)})
                    return
                self._send({"result": encode(result)})
        except Cancelled:
            return
        except Exception as e:  # told to the client; the server stays up
            text, code, hint = describe(e)
            trace = None if isinstance(e, UsageError) else traceback.format_exc()
            self.outbox.put({"error": text, "exit": code, "hint": hint, "traceback": trace})
            if not isinstance(e, OptinspectError):
                sys.stderr.write(f"optinspect serve: a job failed: {text}\n")
        finally:
            if results is not None:  # a cancelled job's hooks come off the model now, not at GC
                results.close()  # type: ignore[attr-defined]
            os.chdir(folder)
            if mask is not None:
                os.umask(mask)
            for restore in reversed(self._restore):
                restore()
            _free_cache(self.server.loaded)


def _free_cache(loaded: LoadedModel) -> None:
    """Hand back what the job's forward passes cached on the GPU."""
    if loaded.device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def _memory(loaded: LoadedModel) -> dict[str, int | None]:
    """The server's resident memory and, on CUDA, what torch holds (bytes)."""
    rss = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        rss = pages * os.sysconf("SC_PAGE_SIZE")
    if rss is None:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rss = peak if sys.platform == "darwin" else peak * 1024
    memory: dict[str, int | None] = {"rss": rss}
    if loaded.device.startswith("cuda"):
        import torch

        memory["cuda_allocated"] = int(torch.cuda.memory_allocated())
        memory["cuda_reserved"] = int(torch.cuda.memory_reserved())
    return memory
