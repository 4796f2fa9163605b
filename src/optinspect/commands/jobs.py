"""How a model command gets its results: from a running server, or from a model it loads.

A command checks its own options, reads its input, and describes the work as a ``Job``:
which command, how the model is loaded, what ``preflight`` checks, the command's
parameters, and the sentences. ``run_job`` sends the job to a server whose model and
settings are the ones asked for, and otherwise runs it here; either way the same
``execute`` runs the same compute function, and the command renders what it yields.

    job = Job("lens", load, checks={"layers": layer}, params={"top_k": 3}, texts=texts)
    with progress(many) as advance:
        for result in run_job(job, advance):
            emitter.emit(result)

A compute function is ``compute(ctx, plan, texts, **params)``: a generator that yields
results and may return a tail (trace returns its FFN summary). It asks ``ctx.model()``
for the model only once it knows there is work, so every check comes before loading.
"""

from __future__ import annotations

import dataclasses
import importlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .options import LoadOptions

if TYPE_CHECKING:
    from ..engine.preflight import Plan
    from ..model.loading import LoadedModel
    from ..serve.client import Server
    from .output import Emitter

__all__ = ["COMPUTE", "Context", "Job", "JobRun", "emit_job", "execute", "run_job"]

#: Every command a server answers, and where its compute function lives.
COMPUTE = {
    "trace": "optinspect.commands.trace:compute",
    "lens": "optinspect.commands.lens:compute",
    "attention": "optinspect.commands.attention:compute",
    "compare": "optinspect.commands.compare:compute",
    "outliers": "optinspect.commands.outliers:compute",
    "calibrate": "optinspect.commands.calibrate:compute",
    "params": "optinspect.commands.params:compute",
}


@dataclass(frozen=True)
class Job:
    """One command's work, as the client sends it: plain values only."""

    command: str
    load: LoadOptions
    checks: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    #: The sentences; None when a file or stdin held none, or the command reads no text.
    texts: Any = None
    umask: int | None = None  # the client's, for files the job writes
    cwd: str = "."  # where relative paths start: the client's working folder, when sent


class Context(Protocol):
    """What a compute function may ask of where it runs."""

    def model(self, *, attn_implementation: str | None = None, **changes: Any) -> LoadedModel:
        """The model as the job's loading options say (``changes`` override some)."""
        ...

    def advance(self, n: int = 1, t: int = 0, totals: tuple[int, int] | None = None) -> None:
        """Progress: ``n`` more sentences (samples) and ``t`` more tokens are done;
        ``totals`` (samples, tokens), once known, turn the counter into a bar."""
        ...

    def note(self, text: str) -> None:
        """A line for the user's stderr (``wrote …``)."""
        ...

    def check_cancelled(self) -> None:
        """Raise when the job is to stop (a server's client went away): for a pass that
        reports no progress, which is where the other passes find out."""
        ...


def execute(job: Job, ctx: Context) -> Iterator[Any]:
    """Check the job's values against the model's config, then run its compute function;
    the engine's notes (``--truncate`` cut a text) go to ``ctx.note``."""
    from ..engine.notes import notes_to
    from ..engine.preflight import preflight

    plan = preflight(job.load, **job.checks) if job.checks is not None else None
    with notes_to(ctx.note):
        return (yield from compute_function(job.command)(ctx, plan, job.texts, **job.params))


def compute_function(command: str) -> Callable[..., Iterator[Any]]:
    module, _, name = COMPUTE[command].partition(":")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


class JobRun:
    """The results of a job, as they come; ``tail`` holds what the job returned at the end."""

    def __init__(self, results: Iterator[Any], here: _Here) -> None:
        self._results = results
        self._here = here
        self.tail: Any = None

    @property
    def load_seconds(self) -> float:
        """The time spent loading the model in this process (0 when a server answered)."""
        return self._here.load_seconds

    def __iter__(self) -> Iterator[Any]:
        self.tail = yield from self._results


class _Here:
    """The context of a job run in this process: the model is loaded on first use."""

    def __init__(self, load: LoadOptions, advance: Callable[..., None] | None) -> None:
        self.load = load
        self._advance = advance
        self.created = time.perf_counter()
        #: From the job's start to its model loaded: the checks, the imports and the load.
        self.load_seconds = 0.0

    def model(self, *, attn_implementation: str | None = None, **changes: Any) -> LoadedModel:
        try:
            return self.load.load(attn_implementation=attn_implementation, **changes)
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

    ``--no-server`` (``load.server`` False) always runs here. A progress counter hears
    of the number of sentences when it is known before they are read (a file's).
    """
    total = getattr(job.texts, "total", None)
    expect = getattr(advance, "expect", None)
    if total is not None and expect is not None:
        expect(total)
    here = _Here(job.load, advance)
    if job.load.server:
        from ..serve.client import find_server

        server = find_server(job.load)
        if server is not None:
            return JobRun(_served(server, job, here), here)
    return JobRun(execute(job, here), here)


def _served(server: Server, job: Job, here: _Here) -> Iterator[Any]:
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


def plan_of(plan: Plan | None) -> Plan:
    """The plan of a job that has checks (every job but ``params``)."""
    assert plan is not None
    return plan
