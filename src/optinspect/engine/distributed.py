"""Many processes under a launcher (torchrun, accelerate launch), with torch.distributed.

    ranks = launched()                       # from WORLD_SIZE, RANK, LOCAL_RANK
    with process_group(ranks, "gloo"):
        agree(ranks, {"model": "tiny"}, error=None)
        mine = [b for i, b in enumerate(batches) if ranks.owns(i)]

One process (no launcher, or WORLD_SIZE=1) needs none of it: every function
here then does nothing and every batch is its own.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ..errors import UsageError

if TYPE_CHECKING:  # torch is imported where ranks meet; launched() reads the environment only
    import torch

__all__ = [
    "NCCL_TIMEOUT",
    "Ranks",
    "agree",
    "all_reduce",
    "gather",
    "group_options",
    "launched",
    "process_group",
]

#: How long an NCCL rank waits at a collective for the others. The ranks' shares differ
#: by one batch at most (seconds on a GPU), so a rank still waiting after this long
#: waits for one that failed after the ranks agreed: it stops then, not at NCCL's
#: 10-minute watchdog. gloo keeps torch's default (30 minutes): a CPU batch of a
#: large model can itself take minutes.
NCCL_TIMEOUT = timedelta(minutes=5)


@dataclass(frozen=True)
class Ranks:
    """This process's place among the processes a launcher started."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def many(self) -> bool:
        return self.world > 1

    @property
    def leader(self) -> bool:
        """Rank 0: the one that writes files and output."""
        return self.rank == 0

    def owns(self, index: int) -> bool:
        """Batch ``index`` (numbered as one process forms them) runs on this rank."""
        return index % self.world == self.rank


def launched() -> Ranks:
    """The ranks a launcher announced in the environment; one process without one."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as e:
        raise UsageError(
            f"the launcher's WORLD_SIZE, RANK or LOCAL_RANK is not a number: {e}"
        ) from e
    return Ranks(rank=rank, world=max(world, 1), local_rank=local)


@contextlib.contextmanager
def process_group(ranks: Ranks, backend: str) -> Iterator[None]:
    """Join the launcher's process group for the block (nothing for one process)."""
    import torch
    import torch.distributed as dist

    if not ranks.many or dist.is_initialized():
        yield
        return
    if backend == "nccl":
        torch.cuda.set_device(ranks.local_rank)
    dist.init_process_group(**group_options(ranks, backend))
    try:
        yield
        # Every rank done with its collectives before any tears its connections
        # down: a rank leaving first can abort a peer's gloo threads at exit.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def group_options(ranks: Ranks, backend: str) -> dict[str, Any]:
    """The arguments of ``init_process_group`` for this rank: with NCCL, its GPU
    (``device_id``, so the communicator is made at once, on that device) and
    ``NCCL_TIMEOUT``, each where this torch's ``init_process_group`` takes it."""
    import torch
    import torch.distributed as dist

    options: dict[str, Any] = {"backend": backend}
    if backend != "nccl":
        return options
    accepted = inspect.signature(dist.init_process_group).parameters
    if "device_id" in accepted:
        options["device_id"] = torch.device("cuda", ranks.local_rank)
    if "timeout" in accepted:
        options["timeout"] = NCCL_TIMEOUT
    return options


def agree(ranks: Ranks, values: Mapping[str, str], error: str | None) -> None:
    """Every rank's ``values`` must equal rank 0's, and no rank may have met an ``error``.

    A collective: every rank calls it, so a rank that failed a check never
    leaves the others waiting. Raises the same ``UsageError`` on every rank.
    """
    if not ranks.many:
        if error is not None:
            raise UsageError(error)
        return
    import torch.distributed as dist

    everyone: list[tuple[dict[str, str], str | None] | None] = [None] * ranks.world
    dist.all_gather_object(everyone, (dict(values), error))
    for rank, entry in enumerate(everyone):
        assert entry is not None
        if entry[1] is not None:
            raise UsageError(entry[1] if rank == ranks.rank else f"rank {rank}: {entry[1]}")
    first = everyone[0][0] if everyone[0] is not None else {}
    for rank, entry in enumerate(everyone[1:], start=1):
        assert entry is not None
        for key in sorted(set(first) | set(entry[0])):
            if first.get(key) != entry[0].get(key):
                raise UsageError(
                    f"the ranks disagree on {key}: rank 0 has {first.get(key)}, "
                    f"rank {rank} has {entry[0].get(key)}"
                )


def all_reduce(tensor: torch.Tensor, op: str) -> torch.Tensor:
    """``tensor`` reduced over every rank with ``op`` (``sum``, ``min`` or ``max``); itself
    for one process. The tensor must live where the backend works (CPU for gloo)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return tensor
    ops = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}
    out = tensor.clone()
    dist.all_reduce(out, op=ops[op])
    return out


def gather(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` (same shape everywhere), stacked in rank order: [world, ...]."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return tensor[None]
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.stack(parts)
