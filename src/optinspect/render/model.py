"""Parameter reports and module trees -> rich tables and trees, JSON payloads and CSV.

Renderers take a Console; they never create one. No torch here.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from typing import IO, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from ..params import LoadedCount, ParamReport, WeightBytes
from ..tree import TreeNode

__all__ = [
    "PARAMS_SCHEMA",
    "TREE_SCHEMA",
    "format_bytes",
    "format_count",
    "params_payload",
    "render_params",
    "render_tree",
    "tree_payload",
    "write_params_csv",
    "write_tree_csv",
]

#: Versions of the JSON layouts; bumped only when a key is removed or changes meaning.
PARAMS_SCHEMA = 1
TREE_SCHEMA = 1

_PRECISIONS = (
    ("float32", "float32"),
    ("float16", "float16/bf16"),
    ("int8", "int8"),
    ("nf4", "nf4"),
)
_BYTES_NOTE = (
    "bytes: weights only; int8 = LLM.int8, nf4 = 4-bit NF4, as bitsandbytes stores them "
    "(lm_head, embeddings, norms and biases in float16)"
)


def format_count(value: int) -> str:
    """An exact count with thousands separators."""
    return f"{value:,}"


def format_bytes(value: int) -> str:
    """Bytes in binary units with three significant digits: ``2.45 GiB``."""
    if value < 1024:
        return f"{value} B"
    size = value / 1024
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            break
        size /= 1024
    digits = 0 if size >= 100 else 1 if size >= 10 else 2
    return f"{size:.{digits}f} {unit}"


def _shape(shape: Sequence[int] | None, sep: str = ", ") -> str:
    return "" if shape is None else "[" + sep.join(str(d) for d in shape) + "]"


def _byte_cells(weights: WeightBytes) -> list[str]:
    values = weights.as_dict()
    return [format_bytes(values[key]) for key, _ in _PRECISIONS]


def params_table(report: ParamReport) -> Table:
    """The breakdown as a table, with a total row that the rows add up to."""
    table = Table(title=f"parameters by {report.by}", title_justify="left")
    table.add_column(report.by, no_wrap=True)
    table.add_column("params", justify="right")
    table.add_column("share", justify="right")
    for _, header in _PRECISIONS:
        table.add_column(header, justify="right")
    for row in report.rows:
        share = row.params / report.total if report.total else 0.0
        share_text = "<0.1%" if 0 < share < 0.0005 else f"{share:.1%}"
        table.add_row(
            escape(row.name), format_count(row.params), share_text, *_byte_cells(row.bytes)
        )
    table.add_section()
    table.add_row("total", format_count(report.total), "100.0%", *_byte_cells(report.bytes))
    return table


def loaded_lines(report: ParamReport, loaded: LoadedCount) -> list[str]:
    """Two lines comparing what a loaded model holds with the config-only count."""
    same = (
        "the same as the config"
        if loaded.params == report.total
        else f"the config says {format_count(report.total)}"
    )
    packed = " (4-bit weights pack two values a byte)" if loaded.stored != loaded.params else ""
    return [
        f"loaded with quant {loaded.quant} · device {loaded.device} · dtype {loaded.dtype}: "
        f"{format_count(loaded.params)} parameters, {same}",
        f"  stored as {format_count(loaded.stored)} elements{packed}; "
        f"{format_bytes(loaded.bytes)} in memory with quantization statistics",
    ]


def render_params(console: Console, report: ParamReport, loaded: LoadedCount | None = None) -> None:
    """Print the header line, the breakdown table and the notes of one parameter report."""
    source = "built-in config" if report.builtin else "config on the meta device"
    header = (
        f"model {report.model} · {format_count(report.total)} parameters · "
        f"{source}, no weights read"
    )
    console.print(escape(header), highlight=False)
    console.print(params_table(report))
    if report.tied_to is not None:
        console.print(
            escape(f"lm_head.weight is tied to {report.tied_to}: counted once"), highlight=False
        )
    console.print(_BYTES_NOTE, highlight=False)
    if loaded is not None:
        for line in loaded_lines(report, loaded):
            console.print(escape(line), highlight=False)


def params_payload(report: ParamReport, loaded: LoadedCount | None = None) -> dict[str, Any]:
    """The ``--format json`` document of ``optinspect params``."""
    payload: dict[str, Any] = {"schema": PARAMS_SCHEMA, **report.as_dict()}
    if loaded is not None:
        payload["loaded"] = {**loaded.as_dict(), "matches_config": loaded.params == report.total}
    return payload


def write_params_csv(stream: IO[str], report: ParamReport) -> None:
    """One header line, then one line per row: name, params and bytes at each precision."""
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(["name", "params", *(key for key, _ in _PRECISIONS)])
    for row in report.rows:
        values = row.bytes.as_dict()
        writer.writerow([row.name, row.params, *(values[key] for key, _ in _PRECISIONS)])


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
        label.append(f"  weight {_shape(node.weight_shape)}", style="dim")
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


def tree_payload(
    model: str, root: TreeNode, *, max_depth: int | None, collapsed: bool
) -> dict[str, Any]:
    """The ``--format json`` document of ``optinspect tree``: a flat, parents-first list."""
    return {
        "schema": TREE_SCHEMA,
        "model": model,
        "total": root.params,
        "collapsed": collapsed,
        "max_depth": max_depth,
        "modules": [node.as_dict() for node in root.walk(max_depth)],
    }


def write_tree_csv(stream: IO[str], root: TreeNode, max_depth: int | None = None) -> None:
    """One header line, then one line per node, parents first; shapes read ``8192x2048``."""
    writer = csv.writer(stream, lineterminator="\n")
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
