"""engine/hooks.py: a HookGroup's hooks exist only inside its ``with`` block, on every path."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from optinspect.engine.batch import Batch
from optinspect.engine.hooks import HookGroup
from optinspect.results.records import Token


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


class Seen(HookGroup):
    """Records the output shape of every module it hooks; ``fail_after`` breaks registration."""

    def __init__(self, modules: list[nn.Module], fail_after: int | None = None) -> None:
        super().__init__()
        self.modules = modules
        self.fail_after = fail_after
        self.calls: list[tuple[int, ...]] = []

    def _register(self) -> None:
        for number, module in enumerate(self.modules):
            if number == self.fail_after:
                raise RuntimeError("cannot hook this one")
            self._keep(module.register_forward_hook(self._seen))

    def _seen(self, module: nn.Module, args: object, output: torch.Tensor) -> None:
        self.calls.append(tuple(output.shape))


@pytest.fixture
def model() -> nn.Sequential:
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def test_hooks_are_registered_on_enter_and_removed_on_exit(model: nn.Sequential) -> None:
    group = Seen([model[0], model[2]])
    assert hook_count(model) == 0  # constructing registers nothing
    with group as entered:
        assert entered is group
        assert hook_count(model) == 2
        model(torch.ones(1, 3))
    assert group.calls == [(1, 4), (1, 2)]
    assert hook_count(model) == 0
    model(torch.ones(1, 3))
    assert len(group.calls) == 2  # nothing hears calls after the block


def test_hooks_are_removed_when_the_forward_raises(model: nn.Sequential) -> None:
    def boom(*_: object) -> None:
        raise RuntimeError("boom")

    failing = model[1].register_forward_hook(boom)
    with pytest.raises(RuntimeError, match="boom"), Seen([model[0], model[2]]):
        model(torch.ones(1, 3))
    failing.remove()
    assert hook_count(model) == 0


def test_hooks_are_removed_on_keyboard_interrupt(model: nn.Sequential) -> None:
    with pytest.raises(KeyboardInterrupt), Seen([model[0]]):
        raise KeyboardInterrupt
    assert hook_count(model) == 0


def test_a_registration_that_fails_halfway_removes_what_it_registered(
    model: nn.Sequential,
) -> None:
    group = Seen([model[0], model[1], model[2]], fail_after=2)
    with pytest.raises(RuntimeError, match="cannot hook this one"), group:
        pytest.fail("the block must not run when registration failed")
    assert hook_count(model) == 0


def test_remove_is_safe_twice(model: nn.Sequential) -> None:
    group = Seen([model[0]])
    with group:
        group.remove()
        assert hook_count(model) == 0
        group.remove()
    group.remove()
    assert hook_count(model) == 0


def test_begin_is_a_no_op_by_default(model: nn.Sequential) -> None:
    class Plain(HookGroup):
        def _register(self) -> None:
            self._keep(model[0].register_forward_hook(lambda *a: None))

    batch = Batch.of(["x"], [[Token(2, "</s>")]], pad_id=1)
    with Plain() as group:
        assert group.begin(batch) is None
        assert hook_count(model) == 1  # begin neither adds nor removes hooks
    assert hook_count(model) == 0


def test_register_must_be_provided() -> None:
    with pytest.raises(NotImplementedError), HookGroup():
        pass


class Both(HookGroup):
    """Hooks before and after each listed module through ``_hook_modules``."""

    def __init__(self, modules: list[nn.Module], model_modules: int) -> None:
        super().__init__()
        self.modules = modules
        self.model_modules = model_modules
        self.events: list[str] = []

    def _register(self) -> None:
        def pre(module: nn.Module, args: object) -> None:
            self.events.append(f"start {type(module).__name__}")

        def post(module: nn.Module, args: object, output: object) -> None:
            self.events.append(f"end {type(module).__name__}")

        self._hook_modules(
            {m: pre for m in self.modules}, {m: post for m in self.modules}, self.model_modules
        )


def global_hook_count() -> int:
    from torch.nn.modules import module as torch_module

    return len(torch_module._global_forward_hooks) + len(torch_module._global_forward_pre_hooks)


@pytest.mark.parametrize(
    ("model_modules", "own", "global_"), [(100, 4, 0), (4, 0, 2)], ids=["per-module", "global"]
)
def test_hook_modules_fires_around_each_module_either_way(
    model: nn.Sequential, model_modules: int, own: int, global_: int
) -> None:
    # Two of the model's four modules: per module when the model is large, global when not.
    group = Both([model[0], model[2]], model_modules)
    with group:
        assert hook_count(model) == own and global_hook_count() == global_
        model(torch.ones(1, 3))
    assert group.events == ["start Linear", "end Linear", "start Linear", "end Linear"]
    assert hook_count(model) == 0 and global_hook_count() == 0
    nn.Linear(3, 3)(torch.ones(1, 3))  # another model's module is not heard, during or after
    assert len(group.events) == 4


def test_global_hooks_ignore_modules_they_were_not_given(model: nn.Sequential) -> None:
    other = nn.Linear(3, 3)
    group = Both([model[0], model[1], model[2]], model_modules=4)
    with group:
        other(torch.ones(1, 3))
        model(torch.ones(1, 3))
    assert group.events == [
        "start Linear",
        "end Linear",
        "start ReLU",
        "end ReLU",
        "start Linear",
        "end Linear",
    ]


def test_global_hooks_are_removed_when_the_forward_raises(model: nn.Sequential) -> None:
    def boom(*_: object) -> None:
        raise RuntimeError("boom")

    failing = model[1].register_forward_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="boom"), Both(list(model), model_modules=4):
            model(torch.ones(1, 3))
    finally:
        failing.remove()
    assert global_hook_count() == 0
