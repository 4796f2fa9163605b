"""The one lifetime rule for hooks: they exist only inside a ``with`` block.

Every class that hooks a model (capture, sparsity, outliers, the dry run's
stop) derives from ``HookGroup`` and only says which hooks to register;
entering registers them, and leaving the block removes them on every path, an
exception mid-forward or mid-registration included. The runner calls
``begin(batch)`` on every group before each forward pass.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

import torch

if TYPE_CHECKING:
    from .runner import Batch

__all__ = ["HookGroup"]

_Self = TypeVar("_Self", bound="HookGroup")


class HookGroup:
    """Owns a set of hook handles whose lifetime is one ``with`` block."""

    def __init__(self) -> None:
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _register(self) -> None:
        """Register this group's hooks, passing each handle to ``_keep``."""
        raise NotImplementedError

    def begin(self, batch: Batch) -> None:
        """A forward pass over ``batch`` comes next; groups that care about the layout
        (padding, sentence numbers) override this."""

    def _keep(self, handle: torch.utils.hooks.RemovableHandle) -> None:
        self._handles.append(handle)

    def __enter__(self: _Self) -> _Self:
        try:
            self._register()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook this group registered; safe to call twice."""
        while self._handles:
            self._handles.pop().remove()
