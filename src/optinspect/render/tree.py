"""Module trees -> a page: the hierarchy with each module's class, parameters, weight shape
and what it is tied to, and the flat rows CSV writes.

    write_terminal(console, tree_page(TreeResult(model, root, max_depth=4)))

No torch here.
"""

from __future__ import annotations

from rich.console import Console

from ..results.tree import TreeNode, TreeResult
from .common import format_count, format_shape
from .layout import Column
from .page import Node, Page, Run, Sheet, Style, Tree, cell
from .terminal import write_terminal

__all__ = ["render_tree", "tree_page"]


def _runs(node: TreeNode) -> tuple[Run, ...]:
    """What follows a node's name: its class (the root's stands alone), the parameters of
    its subtree (per instance too, for a run of siblings), its weight's shape and what
    that weight is tied to."""
    if node.depth == 0:
        return (Run(node.type, Style.strong), Run(f"{format_count(node.params)} params"))
    kind = f"{node.repeat} x {node.type}" if node.repeat > 1 else node.type
    runs = [Run(kind, Style.kind)]
    if node.total or node.tied_to:
        count = f"{format_count(node.total)} params"
        if node.repeat > 1:
            count += f" ({format_count(node.params)} each)"
        runs.append(Run(count))
    if node.weight_shape is not None:
        runs.append(Run(f"weight {format_shape(node.weight_shape)}", Style.quiet))
    if node.tied_to is not None:
        runs.append(Run(f"tied to {node.tied_to}", Style.quiet))
    return tuple(runs)


def _node(node: TreeNode, max_depth: int | None) -> Node:
    """The entry of ``node`` with its children down to ``max_depth``."""
    shown = max_depth is None or node.depth < max_depth
    children = tuple(_node(child, max_depth) for child in node.children) if shown else ()
    return Node(node.name, _runs(node), children)


def _flat(result: TreeResult) -> Sheet:
    """One row per node, parents first, with the JSON's keys as columns; shapes read
    ``8192x2048`` and a missing value is empty."""
    rows = []
    for node in result.root.walk(result.max_depth):
        values = node.as_dict()
        values["weight_shape"] = "x".join(str(d) for d in node.weight_shape or ())
        rows.append({key: "" if value is None else str(value) for key, value in values.items()})
    columns = [Column(key) for key in rows[0]]
    return Sheet("modules", columns, [[cell(text) for text in row.values()] for row in rows])


def tree_page(result: TreeResult) -> Page:
    """The model line (model, parameters, meta device) and the hierarchy down to
    ``result.max_depth``; every count covers a whole subtree."""
    root = result.root
    count = f"{format_count(root.params)} parameters"
    return Page(
        "tree",
        headline=[f"model {result.model}", count, "meta device"],
        parts=[Tree(_node(root, result.max_depth), name="modules")],
        data=result.as_dict(),
        flat=_flat(result),
    )


def render_tree(console: Console, model: str, root: TreeNode, max_depth: int | None = None) -> None:
    """Print the header line and the hierarchy down to ``max_depth``."""
    write_terminal(console, tree_page(TreeResult(model, root, max_depth=max_depth)))
