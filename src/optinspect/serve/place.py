"""Where the server's socket and lock live.

The socket is ``$XDG_RUNTIME_DIR/optinspect/server.sock``, or
``<temp dir>/optinspect-<uid>/server.sock`` where there is no runtime directory.

The lock is always ``<temp dir>/optinspect-<uid>/server.lock``, whatever
``XDG_RUNTIME_DIR`` says, so a user has one server even when one shell sets it and
another does not. The lock file names the server that holds it (its pid and
socket), so a client whose own folder holds no socket finds the server all the same.

Every folder is created 0700 and must belong to the user with no access for anyone
else; otherwise it is refused, as ssh refuses a readable key. The socket and the
lock file are 0600.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError

__all__ = [
    "LOCK_NAME",
    "SOCKET_NAME",
    "Claim",
    "Holder",
    "check_private",
    "claim",
    "find_socket",
    "holder",
    "lock_dir",
    "private_dir",
    "runtime_dir",
    "socket_path",
]

SOCKET_NAME = "server.sock"
LOCK_NAME = "server.lock"
#: ``sun_path`` holds 108 bytes on Linux (104 on macOS), the final NUL included.
_MAX_SOCKET_PATH = 103


def runtime_dir() -> Path:
    """The directory the socket goes in (not created)."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base:
        return Path(base) / "optinspect"
    return lock_dir()


def lock_dir() -> Path:
    """The directory of this user's one lock, whatever ``XDG_RUNTIME_DIR`` says (not created)."""
    return Path(tempfile.gettempdir()) / f"optinspect-{os.getuid()}"


def socket_path() -> Path:
    """The socket of a server started in this environment."""
    return runtime_dir() / SOCKET_NAME


def check_private(path: Path) -> bool:
    """Whether the folder ``path`` exists; raises ``UsageError`` when it does but is not
    this user's alone."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise UsageError(f"{path} is not a folder of this user's: refusing to use it")
    if info.st_mode & 0o077:
        raise UsageError(
            f"{path} can be entered by other users (mode {stat.S_IMODE(info.st_mode):o}): "
            "make it 0700 or remove it"
        )
    return True


def _make_private(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    check_private(path)


def private_dir(create: bool) -> Path | None:
    """The runtime directory after checking it is the user's alone; created 0700 when
    ``create``, else None when it does not exist."""
    path = runtime_dir()
    if create:
        _make_private(path)
    elif not check_private(path):
        return None
    if len(os.fsencode(path / SOCKET_NAME)) > _MAX_SOCKET_PATH:
        raise UsageError(f"{path / SOCKET_NAME} is too long for a Unix socket path")
    return path


@dataclass(frozen=True)
class Holder:
    """The server that holds the lock, as its lock file names it."""

    pid: int
    socket: Path


def holder() -> Holder | None:
    """The server the lock file names, or None when there is no lock file or it names
    none (a server that is starting, or one that was killed). Raises ``UsageError``
    when the lock's folder is not the user's alone."""
    folder = lock_dir()
    if not check_private(folder):
        return None
    try:
        record = json.loads((folder / LOCK_NAME).read_text(encoding="utf-8"))
        return Holder(int(record["pid"]), Path(record["socket"]))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def find_socket() -> Path | None:
    """The socket of this user's running server: the one in this environment's runtime
    folder, else the one the lock names (a server started with another
    ``XDG_RUNTIME_DIR``); None when neither exists. Raises ``UsageError`` when the
    folder it would be in is not the user's alone."""
    own = socket_path()
    if check_private(own.parent) and own.exists():
        return own
    named = holder()
    if named is None or named.socket == own:
        return None
    if check_private(named.socket.parent) and named.socket.exists():
        return named.socket
    return None


class Claim:
    """The lock of this user's one server, held from the moment it starts loading."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd = fd
        self.path = path

    def name(self, socket: Path) -> None:
        """Write this server's pid and socket into the lock file, for clients and for a
        second ``serve`` to find."""
        record = json.dumps({"pid": os.getpid(), "socket": str(socket)}).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, record, 0)

    def release(self) -> None:
        """Remove the lock file, then let the lock go (the order ``claim`` relies on)."""
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                self.path.unlink()
        os.close(self.fd)


def claim() -> Claim | None:
    """Lock ``<lock dir>/server.lock`` (created 0700) for this process's life: the one
    server of this user. None when another server holds it.

    A lock file that its holder removed while this process was locking it is not the
    lock any more: it is opened again.
    """
    import fcntl

    folder = lock_dir()
    _make_private(folder)
    path = folder / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        try:
            current = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            return Claim(fd, path)
        os.close(fd)
