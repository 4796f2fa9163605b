"""How a command gets its results: from a running server, or from a model it loads.

A command describes its work as a ``Job`` (``analyses.job``). ``run_job`` sends the job
to a server whose model and settings are the ones asked for, and otherwise runs it here;
either way the same ``execute`` runs the same compute function, and the command renders
what it yields.

    job = Job("lens", load, checks={"layers": layer}, params={"top_k": 3}, texts=texts)
    with progress(many) as advance:
        for result in run_job(job, advance):
            emitter.emit(result)

Run here, a job's context (``Here``) loads the model behind the spinner on stderr and
shows its progress and notes on the command's display.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ..analyses.job import Job, execute
from .options import LoadOptions

if TYPE_CHECKING:
    from ..model.loading import LoadedModel
    from ..model.settings import LoadSettings
    from ..serve.client import Server
    from .output import Emitter

__all__ = ["Here", "JobRun", "emit_job", "run_job", "with_umask"]


class JobRun:
    """The results of a job, as they come; ``tail`` holds what the job returned at the end."""

    def __init__(self, results: Iterator[Any], here: Here) -> None:
        self._results = results
        self._here = here
        self.tail: Any = None

    @property
    def load_seconds(self) -> float:
        """The time spent loading the model in this process (0 when a server answered)."""
        return self._here.load_seconds

    def __iter__(self) -> Iterator[Any]:
        self.tail = yield from self._results


class Here:
    """The context of a job run in this process: the model is loaded on first use, behind
    the spinner on stderr; progress and notes go to ``advance``, the command's display."""

    def __init__(self, load: LoadSettings, advance: Callable[..., None] | None) -> None:
        self.load = load
        self._advance = advance
        self.created = time.perf_counter()
        #: From the job's start to its model loaded: the checks, the imports and the load.
        self.load_seconds = 0.0

    def model(self, *, attn_implementation: str | None = None, **changes: Any) -> LoadedModel:
        from .common import load_with_status

        try:
            settings = dataclasses.replace(self.load, **changes)
            return load_with_status(settings, attn_implementation=attn_implementation)
        finally:
            self.load_seconds = time.perf_counter() - self.created

    def advance(self, n: int = 1, t: int = 0, totals: tuple[int, int] | None = None) -> None:
        if self._advance is not None:
            self._advance(n, t, totals)

    def note(self, text: str) -> None:
        from .common import note

        # Through the progress display when one is live, so the line is not drawn over.
        getattr(self._advance, "note", note)(text)

    def check_cancelled(self) -> None:
        pass  # a local job stops on Ctrl-C, which reaches it at once


def run_job(job: Job, advance: Callable[..., None] | None = None) -> JobRun:
    """The job's results from a matching server, or from running it here.

    ``--no-server`` (``LoadOptions.server`` False) always runs here. A progress counter
    hears of the number of sentences when it is known before they are read (a file's).
    """
    total = getattr(job.texts, "total", None)
    expect = getattr(advance, "expect", None)
    if total is not None and expect is not None:
        expect(total)
    here = Here(job.load, advance)
    if not isinstance(job.load, LoadOptions) or job.load.server:
        from ..serve.client import find_server

        server = find_server(job.load)
        if server is not None:
            return JobRun(_served(server, job, here), here)
    return JobRun(execute(job, here), here)


def _served(server: Server, job: Job, here: Here) -> Iterator[Any]:
    from ..serve.client import ServerGone

    try:
        return (yield from server.run(job, here))
    except ServerGone as gone:  # progress may be on screen already: the note goes above it
        here.note(f"note: the optinspect server did not run this job ({gone}); loading here")
        return (yield from execute(job, here))


def emit_job(job: Job, emitter: Emitter, *, many: bool, label: str, verb: str) -> None:
    """Run ``job`` and give each result to ``emitter`` as it comes, with a progress counter
    for many sentences; then end the output, with a note when the input held nothing."""
    from .common import progress, say_nothing_read

    with progress(enabled=many, label=label) as advance:
        for result in run_job(job, advance):
            emitter.emit(result)
    emitter.close()
    if job.texts is None:
        say_nothing_read(verb)


def with_umask(job: Job) -> Job:
    """The job with this process's umask, for the files it writes."""
    from ..results.files import umask

    return dataclasses.replace(job, umask=umask())
