"""Module trees -> a rich tree with parameter counts, and CSV.

Renderers take a Console; they never create one. No torch here.
"""

from __future__ import annotations

from typing import IO

from rich.console import Console
from rich.markup import escape
from rich.text import Text
from rich.tree import Tree

from ..tree import TreeNode
from .common import format_count, format_shape
from .csvfile import csv_rows

__all__ = ["render_tree", "write_tree_csv"]


def _tree_label(node: TreeNode) -> Text:
    label = Text()
    if node.depth == 0:
        label.append(node.type, style="bold")
        label.append(f"  {format_count(node.params)} params")
        return label
    label.append(node.name, style="bold")
    kind = f"{node.repeat} x {node.type}" if node.repeat > 1 else node.type
    label.append(f"  {kind}", style="cyan")
    if node.total or node.tied_to:
        label.append(f"  {format_count(node.total)} params")
        if node.repeat > 1:
            label.append(f" ({format_count(node.params)} each)")
    if node.weight_shape is not None:
        label.append(f"  weight {format_shape(node.weight_shape)}", style="dim")
    if node.tied_to is not None:
        label.append(f"  tied to {node.tied_to}", style="dim")
    return label


def render_tree(console: Console, model: str, root: TreeNode, max_depth: int | None = None) -> None:
    """Print the header line and the hierarchy down to ``max_depth`` as a rich Tree."""
    console.print(
        escape(f"model {model} · {format_count(root.params)} parameters · meta device"),
        highlight=False,
    )
    tree = Tree(_tree_label(root))
    branches: dict[int, Tree] = {id(root): tree}
    stack = [root]
    while stack:
        node = stack.pop()
        if max_depth is not None and node.depth >= max_depth:
            continue
        for child in node.children:
            branches[id(child)] = branches[id(node)].add(_tree_label(child))
        stack.extend(reversed(node.children))
    console.print(tree)


def write_tree_csv(stream: IO[str], root: TreeNode, max_depth: int | None = None) -> None:
    """One header line, then one line per node, parents first; shapes read ``8192x2048``."""
    writer = csv_rows(stream)
    columns = ["name", "type", "depth", "repeat", "params", "own_params", "weight_shape"]
    writer.writerow([*columns, "tied_to"])
    for node in root.walk(max_depth):
        shape = "x".join(str(d) for d in node.weight_shape) if node.weight_shape else ""
        writer.writerow(
            [
                node.name,
                node.type,
                node.depth,
                node.repeat,
                node.params,
                node.own_params,
                shape,
                node.tied_to or "",
            ]
        )
