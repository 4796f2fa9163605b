"""Module trees -> a rich tree with parameter counts, and CSV.

Renderers take a Console; they never create one. No torch here.
"""

from __future__ import annotations

import re
from typing import IO

from rich.console import Console
from rich.text import Text
from rich.tree import Tree

from ..results.tree import TreeNode
from .common import format_count, format_shape
from .csvfile import csv_rows
from .layout import NAME_BREAKS, print_parts, wrap_pieces

__all__ = ["render_tree", "write_tree_csv"]

#: The columns rich's tree guides take per level ("├── ", "│   ").
_GUIDE = 4
#: Between two values of a node's label.
_GAP = "  "
#: How far a label's continuation lines are indented under its first.
_CONTINUED = 2


def _tree_label(node: TreeNode, width: int) -> Text:
    """The node's name, class, parameters, weight shape and what it is tied to, as lines
    of at most ``width`` cells that break only between two of them (or, for a name wider
    than that alone, after a dot of it): a count or a shape is never split."""
    if node.depth == 0:
        values = [Text(node.type, style="bold"), Text(f"{format_count(node.params)} params")]
        name: list[Text] = []
    else:
        name = [Text(part, style="bold") for part in re.split(NAME_BREAKS, node.name)]
        kind = f"{node.repeat} x {node.type}" if node.repeat > 1 else node.type
        values = [Text(kind, style="cyan")]
        if node.total or node.tied_to:
            count = f"{format_count(node.total)} params"
            if node.repeat > 1:
                count += f" ({format_count(node.params)} each)"
            values.append(Text(count))
        if node.weight_shape is not None:
            values.append(Text(f"weight {format_shape(node.weight_shape)}", style="dim"))
        if node.tied_to is not None:
            values.append(Text(f"tied to {node.tied_to}", style="dim"))
    pieces = [*name[:-1], *(Text.assemble(piece, _GAP) for piece in [*name[-1:], *values[:-1]])]
    lines = wrap_pieces([*pieces, values[-1]], width, indent=_CONTINUED)
    return Text("\n").join(lines)


def render_tree(console: Console, model: str, root: TreeNode, max_depth: int | None = None) -> None:
    """Print the header line and the hierarchy down to ``max_depth`` as a rich Tree."""
    print_parts(
        console, [f"model {model}", f"{format_count(root.params)} parameters", "meta device"]
    )
    tree = Tree(_tree_label(root, console.width))
    branches: dict[int, Tree] = {id(root): tree}
    stack = [root]
    while stack:
        node = stack.pop()
        if max_depth is not None and node.depth >= max_depth:
            continue
        for child in node.children:
            label = _tree_label(child, console.width - _GUIDE * child.depth)
            branches[id(child)] = branches[id(node)].add(label)
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
