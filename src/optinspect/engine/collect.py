"""Analyses composed into one forward pass: each is a collector, hook groups plus a reducer.

    collectors = [trace_collector, lens_collector]
    for batch, (traces, lenses) in collect(runner, texts, collectors):
        ...

A collector says which hook groups it needs (``groups()``), which keyword arguments the
forward needs (``forward_kwargs``, such as ``output_attentions``), and turns what its
hooks saw, with the model's output, into its results once each batch has run
(``finish``). ``collect`` enters every group for one ``with`` block, runs each batch
once, and asks every collector for its results: one forward serves them all, which is
how ``report`` runs trace, lens, attention, outliers and sparsity together, and how
each of them runs alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .batch import Batch
    from .hooks import HookGroup
    from .runner import Runner

__all__ = ["NO_KWARGS", "Collector", "collect"]

#: The ``forward_kwargs`` of a collector that asks the forward for nothing.
NO_KWARGS: Mapping[str, Any] = MappingProxyType({})


class Collector(Protocol):
    """Hook groups plus a reducer that one forward pass can share with others."""

    #: What the forward must be given for this collector (``output_attentions=True``).
    forward_kwargs: Mapping[str, Any]

    def groups(self) -> Sequence[HookGroup]:
        """The hook groups to hold on the model while the batches run."""
        ...

    def finish(self, batch: Batch, output: Any) -> Any:
        """This collector's results for ``batch``, from its hooks and the model's output."""
        ...


def collect(
    runner: Runner, texts: Iterable[str], collectors: Sequence[Collector]
) -> Iterator[tuple[Batch, list[Any]]]:
    """Run ``texts`` once per batch with every collector's hooks on; yield each batch with
    the list of what each collector's ``finish`` returned, in the collectors' order.

    Every group is entered in order and removed on every path when the iteration ends
    (or is closed); the model's output is dropped before the next batch runs.
    """
    groups = [group for collector in collectors for group in collector.groups()]
    kwargs: dict[str, Any] = {}
    for collector in collectors:
        kwargs.update(collector.forward_kwargs)
    with contextlib.ExitStack() as stack:
        for group in groups:
            stack.enter_context(group)
        for batch, output in runner.run(texts, groups, **kwargs):
            results = [collector.finish(batch, output) for collector in collectors]
            del output  # free the logits (and attentions) before the next batch
            yield batch, results
