"""Where the server's socket lives: ``$XDG_RUNTIME_DIR/optinspect/server.sock``, or
``<temp dir>/optinspect-<uid>/server.sock`` where there is no runtime directory.

The directory is created 0700 and must belong to the user with no access for anyone
else; otherwise it is refused, as ssh refuses a readable key. The socket is 0600.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from ..errors import UsageError

__all__ = ["SOCKET_NAME", "claim", "private_dir", "runtime_dir", "socket_path"]

SOCKET_NAME = "server.sock"
#: ``sun_path`` holds 108 bytes on Linux (104 on macOS), the final NUL included.
_MAX_SOCKET_PATH = 103


def runtime_dir() -> Path:
    """The directory the socket goes in (not created)."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base:
        return Path(base) / "optinspect"
    return Path(tempfile.gettempdir()) / f"optinspect-{os.getuid()}"


def socket_path() -> Path:
    """The socket of this user's server."""
    return runtime_dir() / SOCKET_NAME


def private_dir(create: bool) -> Path | None:
    """The runtime directory after checking it is the user's alone; created 0700 when
    ``create``, else None when it does not exist."""
    path = runtime_dir()
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise UsageError(f"{path} is not a folder of this user's: refusing to use it")
    if info.st_mode & 0o077:
        raise UsageError(
            f"{path} can be entered by other users (mode {stat.S_IMODE(info.st_mode):o}): "
            "make it 0700 or remove it"
        )
    if len(os.fsencode(path / SOCKET_NAME)) > _MAX_SOCKET_PATH:
        raise UsageError(f"{path / SOCKET_NAME} is too long for a Unix socket path")
    return path


def claim(folder: Path) -> int | None:
    """Lock ``folder/server.lock`` for this process's life: the one server of this user.

    The file descriptor that holds the lock (closed, the lock goes with it), or None
    when another server holds it, from the moment it starts loading.
    """
    import fcntl

    fd = os.open(folder / "server.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd
