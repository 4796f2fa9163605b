"""The tree records: one module (or a run of identical siblings shown once) with the
parameters of its subtree, and the hierarchy ``optinspect tree`` shows. ``analyses.tree``
builds them; no torch here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .records import SCHEMA_VERSION

__all__ = ["TreeNode", "TreeResult"]


@dataclass(frozen=True)
class TreeNode:
    """One module, or ``repeat`` identical siblings shown once.

    name is the full dotted name (``""`` for the model itself; a collapsed run
    of siblings reads ``model.decoder.layers.0-23``). params counts the
    parameters of the subtree of one instance, each shared tensor once (where
    it first appears), so ``params == own_params + sum(c.params * c.repeat)``
    over the children. weight_shape is the shape of the module's own
    ``weight``; tied_to names the parameter that weight is shared with, when
    it was counted there.
    """

    name: str
    type: str
    depth: int
    repeat: int
    params: int
    own_params: int
    weight_shape: tuple[int, ...] | None
    tied_to: str | None
    children: tuple[TreeNode, ...]

    @property
    def total(self) -> int:
        """Parameters of all ``repeat`` instances together."""
        return self.params * self.repeat

    def walk(self, max_depth: int | None = None) -> Iterator[TreeNode]:
        """This node and its descendants, parents first, down to ``max_depth``."""
        if max_depth is not None and self.depth > max_depth:
            return
        yield self
        for child in self.children:
            yield from child.walk(max_depth)

    def as_dict(self) -> dict[str, Any]:
        """The flat JSON form of this node alone (children are separate entries)."""
        return {
            "name": self.name,
            "type": self.type,
            "depth": self.depth,
            "repeat": self.repeat,
            "params": self.params,
            "own_params": self.own_params,
            "weight_shape": list(self.weight_shape) if self.weight_shape is not None else None,
            "tied_to": self.tied_to,
        }


@dataclass(frozen=True)
class TreeResult:
    """What ``optinspect tree`` shows: the hierarchy of ``model`` down to ``max_depth``."""

    model: str
    root: TreeNode
    max_depth: int | None = None
    collapsed: bool = True

    def as_dict(self) -> dict[str, Any]:
        """The ``--format json`` document: a flat, parents-first list."""
        return {
            "schema": SCHEMA_VERSION,
            "model": self.model,
            "total": self.root.params,
            "collapsed": self.collapsed,
            "max_depth": self.max_depth,
            "modules": [node.as_dict() for node in self.root.walk(self.max_depth)],
        }
