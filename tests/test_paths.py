"""Paths the user cannot use: inside a folder this user cannot enter (another user's), or
a folder that takes no new file. Each is a usage error that names the path (exit 2), found
before any model loads, as a missing or read-only folder already was.

Root ignores permission bits, and the suite runs as root in CI, so most tests make the
folder unenterable by making every ``stat`` below it raise the ``PermissionError`` the
system gives a user without the search bit; ``test_a_real_locked_folder`` makes a real one
(as root, in a child that gives up root's right to ignore permissions).
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from optinspect.errors import describe

SRC = Path(__file__).resolve().parents[1] / "src"
TINY = ("--model", "tiny", "-q", "none")


@pytest.fixture
def no_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a model fails the test: every check here comes before it."""
    import optinspect.commands.common as common
    import optinspect.model.loading as loading

    def refuse(*args: object, **kwargs: object) -> None:
        pytest.fail("a model was loaded: this check must come before")

    monkeypatch.setattr(common, "load_with_status", refuse)
    monkeypatch.setattr(loading, "load_model", refuse)


@pytest.fixture
def locked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder that this process cannot look into: ``stat`` of anything in it raises
    EACCES, as for a folder without the search bit."""
    folder = tmp_path / "locked"
    folder.mkdir()
    real_stat = Path.stat

    def stat(self: Path, *, follow_symlinks: bool = True) -> os.stat_result:
        if str(self).startswith(f"{folder}{os.sep}"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_stat(self, follow_symlinks=follow_symlinks)

    monkeypatch.setattr(Path, "stat", stat)
    return folder


def _cases(locked: Path, sentences: Path) -> list[tuple[list[str], str]]:
    """(arguments, message) for every option that names a path."""
    out = locked / "x.safetensors"
    return [
        (["trace", "x", *TINY, "--save", str(out)], f"cannot write {out}: permission denied"),
        (
            ["trace", "x", *TINY, "--layer", "all", "--plot", f"{locked}/x.png"],
            f"cannot write {locked}/x.png: permission denied",
        ),
        (
            ["calibrate", "--file", str(sentences), *TINY, "--out", str(out)],
            f"cannot write {out}: permission denied",
        ),
        (
            ["trace", "--file", f"{locked}/s.txt", *TINY],
            f"cannot read input file {locked}/s.txt: permission denied",
        ),
        (
            ["trace", "x", "--model", f"{locked}/m"],
            f"cannot read model folder {locked}/m: permission denied",
        ),
        (
            ["trace", "x", *TINY, "--offload-dir", f"{locked}/off"],
            f"--offload-dir {locked}/off cannot be written: permission denied",
        ),
    ]


CASE_IDS = ["save", "plot", "calibrate-out", "file", "model", "offload-dir"]


@pytest.fixture
def sentences(tmp_path: Path) -> Path:
    path = tmp_path / "s.txt"
    path.write_text("Hello world\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("case", range(len(CASE_IDS)), ids=CASE_IDS)
def test_a_path_in_a_folder_that_cannot_be_entered(
    cli, no_load, locked: Path, sentences: Path, case: int
) -> None:
    if CASE_IDS[case] == "plot":
        pytest.importorskip("matplotlib")
    args, message = _cases(locked, sentences)[case]
    result = cli(*args)
    assert (result.code, result.out, result.err) == (2, "", f"Error: {message}\n")


def test_a_model_folder_whose_config_cannot_be_read(cli, no_load, tmp_path, monkeypatch) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    real_stat = Path.stat

    def stat(self: Path, *, follow_symlinks: bool = True) -> os.stat_result:
        if self.name == "config.json" and self.parent == folder:  # a folder without x
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_stat(self, follow_symlinks=follow_symlinks)

    monkeypatch.setattr(Path, "stat", stat)
    result = cli("trace", "x", "--model", str(folder))
    assert (result.code, result.err) == (
        2,
        f"Error: cannot read model folder {folder}: permission denied\n",
    )


def test_an_input_file_that_cannot_be_opened(cli, no_load, sentences: Path, monkeypatch) -> None:
    real_open = Path.open

    def refuse(self: Path, *args: object, **kwargs: object) -> object:
        if self == sentences:  # a file of another user's, mode 0600
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_open(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "open", refuse)
    result = cli("lens", "--file", str(sentences), *TINY, "-f", "jsonl")
    assert (result.code, result.out, result.err) == (
        2,
        "",
        f"Error: cannot read input file {sentences}: permission denied\n",
    )


def test_any_other_permission_error_is_a_usage_error_naming_its_path() -> None:
    # What the checks do not reach (a file read later, deep in a library) is still a bad
    # path, told in one line with exit 2, not "PermissionError: [Errno 13] ...".
    error = PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/srv/other/w.bin")
    assert describe(error) == ("cannot access /srv/other/w.bin: permission denied", 2, True)
    assert describe(PermissionError("no")) == ("no", 2, True)


def _unprivileged() -> list[str] | None:
    """The command prefix that runs a child without the right to ignore permissions: none
    for a user who has no such right; setpriv for root, where it can drop it; else None."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search"]
    probe = subprocess.run([*prefix, "true"], capture_output=True, check=False)
    return prefix if probe.returncode == 0 else None


@pytest.mark.parametrize("case", range(len(CASE_IDS)), ids=CASE_IDS)
def test_a_real_locked_folder(tmp_path: Path, sentences: Path, case: int) -> None:
    prefix = _unprivileged()
    if prefix is None:
        pytest.skip("running as root without setpriv: root enters every folder")
    if CASE_IDS[case] == "plot":
        pytest.importorskip("matplotlib")
    folder = tmp_path / "locked"
    folder.mkdir()
    if os.geteuid() == 0:
        os.chown(folder, 65534, 65534)  # another user's, private: root without its rights
        folder.chmod(0o700)
    else:
        folder.chmod(0)
    args, message = _cases(folder, sentences)[case]
    env = {**os.environ, "PYTHONPATH": str(SRC), "OPTINSPECT_NO_SERVER": "1"}
    try:
        proc = subprocess.run(
            [*prefix, sys.executable, "-m", "optinspect", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=False,
        )
    finally:
        folder.chmod(0o700)
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", f"Error: {message}\n")
