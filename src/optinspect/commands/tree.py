"""``optinspect tree``: the module hierarchy with parameter counts, on the meta device."""

from __future__ import annotations

from typing import Annotated

import typer

from .options import DEFAULT_MODEL, DebugOpt, Format, ModelOpt, TableFormatOpt


def tree_command(
    model: ModelOpt = DEFAULT_MODEL,
    depth: Annotated[
        int | None,
        typer.Option(
            "--depth",
            "-d",
            metavar="N",
            help="Show modules down to this depth: 0 is the model, 1 model and lm_head, "
            "4 the decoder layers. Counts always cover whole subtrees.",
        ),
    ] = None,
    collapse: Annotated[
        bool,
        typer.Option(
            "--collapse/--no-collapse",
            help="Show identical consecutive decoder layers once, as layers.0-23 "
            "(24 x OPTDecoderLayer), like print(model) does.",
        ),
    ] = True,
    fmt: TableFormatOpt = Format.table,
    debug: DebugOpt = False,
) -> None:
    """Show the module hierarchy of a model: names, classes, parameters, weight shapes.

    The model is built on the meta device from its configuration alone: no
    weights are read or downloaded. Every node counts the parameters of its
    whole subtree; a tied lm_head counts under the token embeddings.

    Examples:

    \b
      optinspect tree --model facebook/opt-1.3b --depth 4
      optinspect tree --model tiny --no-collapse -f json | jq '.modules[].name'
      optinspect tree --model facebook/opt-175b --format csv
    """
    from ..analyses.tree import tree_model
    from ..engine.preflight import check_depth
    from ..render.tree import tree_page
    from ..results.tree import TreeResult
    from .output import emit_result

    check_depth(depth)
    root = tree_model(model, collapse=collapse)
    result = TreeResult(model, root, max_depth=depth, collapsed=collapse)
    emit_result(fmt.value, result, tree_page)
