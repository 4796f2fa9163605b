"""Rendering: JSON that never holds NaN, numbers, and how tables wrap (the golden tables are in
test_golden.py)."""

from __future__ import annotations

import io
import json

from rich.console import Console

from conftest import sample_result
from optinspect.render.common import format_number, write_json


def test_json_turns_undefined_statistics_into_null() -> None:
    buffer = io.StringIO()
    write_json(buffer, sample_result().as_dict())
    doc = json.loads(buffer.getvalue())
    assert doc["modules"][2]["stats"]["mean"] is None
    assert doc["modules"][2]["stats"]["nan"] == 4
    assert doc["modules"][3]["output"] == "none" and doc["modules"][3]["stats"] is None
    assert doc["modules"][1]["weight_shape"] == [32, 8]


def test_format_number() -> None:
    assert format_number(None) == "-"
    assert format_number(3) == "3"
    assert format_number(0.000123456) == "0.0001235"
    assert format_number(123456.0) == "1.235e+05"


# --- layout: lines and blocks that never cut a value ---------------------------------------


def test_wrap_pieces_breaks_only_between_pieces() -> None:
    from optinspect.render.layout import wrap_pieces

    pieces = ["model ", "tiny · ", "241,152 parameters · ", "meta device"]
    lines = [line.plain for line in wrap_pieces(pieces, 30, indent=2)]
    assert lines == ["model tiny ·", "  241,152 parameters ·", "  meta device"]
    # A piece wider than the width gets a line of its own, whole.
    assert [line.plain for line in wrap_pieces(["a ", "x" * 12, " b"], 5)] == ["a", "x" * 12, "b"]


def _table_text(tables, width: int) -> str:
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, force_terminal=False)
    for table in tables:
        console.print(table)
    return buffer.getvalue()


def test_blocks_keep_a_group_together_where_it_fits() -> None:
    from optinspect.render.layout import Column, fit_tables

    columns = [
        Column("name", justify="left", key=True),
        Column("aaaaaaaaaa", group="one"),
        Column("bbbbbbbbbb", group="one"),
        Column("cccccccccc", group="two"),
        Column("dddddddddd", group="two"),
        Column("eeeeeeeeee", group="two"),
    ]
    # Room for three columns a block: the most even split (3 + 2) would part "two".
    text = _table_text(fit_tables(columns, [["x", *"12345"]], 50), 50)
    headers = [line.split("┃")[2:-1] for line in text.splitlines() if line.startswith("┃")]
    assert [[h.strip() for h in header] for header in headers] == [
        ["aaaaaaaaaa", "bbbbbbbbbb"],
        ["cccccccccc", "dddddddddd", "eeeeeeeeee"],
    ]


def test_long_names_wrap_after_a_dot_never_before_a_layer_index() -> None:
    from optinspect.render.layout import NAME_BREAKS, Column, fit_tables

    names = [f"model.decoder.layers.{i}.self_attn.out_proj" for i in (3, 17)] + ["lm_head"]
    columns = [
        Column("module", justify="left", key=True, wrap=True, breaks=NAME_BREAKS),
        *(Column(f"statistic {i}", group="stats") for i in range(4)),
    ]
    rows = [[name, "1.234", "-0.5678", "12.5%", "3"] for name in names]
    text = _table_text(fit_tables(columns, rows, 70), 70)
    cells = [line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│")]
    # One block at 70 columns: each long name on two lines, broken after a dot.
    assert cells[:5] == [
        "model.decoder.layers.3.self_attn.",
        "out_proj",
        "model.decoder.layers.17.self_attn.",
        "out_proj",
        "lm_head",
    ]
    for width in range(40, 71, 5):
        text = _table_text(fit_tables(columns, rows, width), width)
        cells = [line.split("│")[1].strip() for line in text.splitlines() if line[:1] == "│"]
        assert all(not cell[:1].isdigit() for cell in cells), (width, cells)
        joined = "".join(cell for cell in cells if cell)
        assert all(name in joined for name in names), width
