"""A job: one command's work as plain data, and the one way it runs, wherever it runs.

A command checks its own options, reads its input, and describes the work as a ``Job``:
which command, how the model is loaded, what ``preflight`` checks, the command's
parameters, and the sentences. ``execute`` runs it: in the command's own process, or in a
server that holds the model (``optinspect serve``), the same checks and the same compute
function, which yields the results the command renders.

    job = Job("lens", LoadSettings("tiny"), checks={"layers": "0"}, params={...}, texts=texts)
    for result in execute(job, ctx):
        ...

A compute function is ``compute(ctx, plan, texts, **params)``: a generator that yields
results and may return a tail (trace returns its FFN summary). It asks ``ctx.model()``
for the model only once it knows there is work, so every check comes before loading.
``Context`` is what it may ask of where it runs. Neither the CLI nor the server owns a
job: both read it. ``run_held`` runs a job on a model the caller loaded already (the
Python API's). No torch here: a held model brought it.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..model.settings import LoadSettings
from . import COMPUTE

if TYPE_CHECKING:
    from ..engine.preflight import Plan
    from ..model.loading import LoadedModel

__all__ = [
    "Context",
    "Held",
    "Job",
    "compute_function",
    "execute",
    "plan_of",
    "run_held",
    "settings_of",
]

#: Where a held job's notes go (``wrote …``, a text cut by ``truncate``).
logger = logging.getLogger("optinspect")


@dataclass(frozen=True)
class Job:
    """One command's work, as the client sends it: plain values only."""

    command: str
    load: LoadSettings
    checks: dict[str, Any] | None = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    #: The sentences; None when a file or stdin held none, or the command reads no text.
    texts: Any = None
    umask: int | None = None  # the client's, for files the job writes
    cwd: str = "."  # where relative paths start: the client's working folder, when sent


class Context(Protocol):
    """What a compute function may ask of where it runs."""

    def model(self, *, attn_implementation: str | None = None, **changes: Any) -> LoadedModel:
        """The model as the job's loading settings say (``changes`` override some)."""
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
    """The compute function of ``command`` (``COMPUTE``), imported now."""
    module, _, name = COMPUTE[command].partition(":")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def plan_of(plan: Plan | None) -> Plan:
    """The plan of a job that has checks (every job but ``params``)."""
    assert plan is not None
    return plan


def settings_of(loaded: LoadedModel) -> LoadSettings:
    """The settings ``loaded`` came from; for a model loaded otherwise, those it reports."""
    if loaded.settings is not None:
        return loaded.settings
    return LoadSettings(
        loaded.source.spec, quant=loaded.quant, device=loaded.device, dtype=loaded.dtype_name
    )


class Held:
    """The context of a job run on a model the caller loaded: that model, its attention
    switched for the job where asked (``restore`` switches it back); another setting
    (compare's reference) is loaded for the job. Notes go to the ``optinspect`` logger;
    there is no progress display."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self.settings = settings_of(loaded)
        self.restore: list[Callable[[], None]] = []

    def model(self, *, attn_implementation: str | None = None, **changes: Any) -> LoadedModel:
        from ..model.loading import load_from_settings, switch_attention

        wanted = dataclasses.replace(self.settings, **changes)
        if wanted.settings() != self.settings.settings():
            return load_from_settings(wanted, attn_implementation=attn_implementation)
        undo = switch_attention(self.loaded, attn_implementation)
        if undo is not None:
            self.restore.append(undo)
        return self.loaded

    def advance(self, n: int = 1, t: int = 0, totals: tuple[int, int] | None = None) -> None:
        pass  # a script or a notebook cell shows no counter

    def note(self, text: str) -> None:
        logger.info(text)

    def check_cancelled(self) -> None:
        pass  # KeyboardInterrupt (a notebook's interrupt) stops it where it is


def run_held(command: str, loaded: LoadedModel, **job: Any) -> tuple[list[Any], Any]:
    """Run ``command``'s job (``job``: the ``Job`` fields but the command and the load
    settings) on ``loaded``, as the CLI runs it: its checks, then its compute function;
    its results, and the tail it returned. The model's attention is as it was after."""
    ctx = Held(loaded)
    job.setdefault("checks", {})
    results: list[Any] = []
    try:
        stream = execute(Job(command, ctx.settings, **job), ctx)
        while True:
            try:
                results.append(next(stream))
            except StopIteration as end:
                return results, end.value
    finally:
        for undo in reversed(ctx.restore):
            undo()
