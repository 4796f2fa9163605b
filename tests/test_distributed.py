"""How ranks join a process group: the arguments NCCL gets, checked without a GPU."""

from __future__ import annotations

import inspect
from datetime import timedelta
from typing import Any

import pytest
import torch
import torch.distributed as dist

from optinspect.engine import distributed
from optinspect.engine.distributed import NCCL_TIMEOUT, Ranks, group_options, process_group


def test_nccl_binds_each_rank_to_its_gpu_and_times_out_before_the_watchdog() -> None:
    options = group_options(Ranks(rank=3, world=4, local_rank=1), "nccl")
    assert options == {
        "backend": "nccl",
        "device_id": torch.device("cuda", 1),
        "timeout": NCCL_TIMEOUT,
    }
    # NCCL's own watchdog gives up after 10 minutes: a rank that failed after the ranks
    # agreed must stop the others well before that.
    assert timedelta(minutes=1) <= NCCL_TIMEOUT < timedelta(minutes=10)


def test_gloo_keeps_torchs_defaults() -> None:
    assert group_options(Ranks(rank=0, world=2, local_rank=0), "gloo") == {"backend": "gloo"}


def test_an_older_torch_without_device_id_gets_what_it_takes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def init_process_group(backend: str | None = None, timeout: Any = None) -> None: ...

    monkeypatch.setattr(dist, "init_process_group", init_process_group)
    options = group_options(Ranks(rank=1, world=2, local_rank=1), "nccl")
    assert options == {"backend": "nccl", "timeout": NCCL_TIMEOUT}
    assert set(options) <= set(inspect.signature(init_process_group).parameters)


def test_the_process_group_is_made_with_those_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, Any]] = []
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(
        torch.cuda, "set_device", lambda device: calls.append(("set_device", device))
    )
    monkeypatch.setattr(dist, "init_process_group", lambda **kw: calls.append(("init", kw)))
    monkeypatch.setattr(dist, "barrier", lambda: calls.append(("barrier", None)))
    monkeypatch.setattr(dist, "destroy_process_group", lambda: calls.append(("destroy", None)))
    ranks = Ranks(rank=1, world=2, local_rank=1)
    with process_group(ranks, "nccl"):
        pass
    assert calls == [
        ("set_device", 1),
        ("init", distributed.group_options(ranks, "nccl")),
        ("barrier", None),
        ("destroy", None),
    ]
