"""Files written atomically: a temporary file beside the target, then a rename, so a failed
or interrupted write leaves no partial file and no temporary behind.

    write_atomic(Path("out.json"), lambda tmp: tmp.write_text("{}"))

What every writer shares (the safetensors files of ``engine.saving``, the images of
``render``). The standard library only.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["umask", "write_atomic"]


def write_atomic(path: Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place.

    The file gets the permissions a plain ``open`` would give it (0666 less the
    umask), not the private 0600 of a temporary file; a file it replaces keeps
    its own permissions.
    """
    mode = stat.S_IMODE(path.stat().st_mode) if path.is_file() else 0o666 & ~umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def umask() -> int:
    """This process's umask."""
    mask = os.umask(0)  # the only way to read it is to set it; put it back at once
    os.umask(mask)
    return mask
