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


def test_a_line_of_parts_breaks_only_between_two_parts() -> None:
    # The params bytes note: at every width each part is whole on one line, and no line is
    # wider than the console where the widest part fits.
    from optinspect.render.page import Lines, Page
    from optinspect.render.terminal import write_terminal

    parts = ["bytes: weights only, as stored", "int8 = LLM.int8, nf4 = 4-bit NF4", "biases f16"]
    for width in range(36, 120):
        buffer = io.StringIO()
        console = Console(file=buffer, width=width, color_system=None)
        write_terminal(console, Page("params", parts=[Lines(parts, separator="; ")]))
        lines = buffer.getvalue().splitlines()
        assert max(len(line) for line in lines) <= width
        assert all(any(part in line for line in lines) for part in parts)
        assert " ".join(line.strip() for line in lines) == "; ".join(parts)


def test_csv_of_a_sheet_reads_back_exactly_and_the_header_comes_once() -> None:
    import csv

    from optinspect.render.csvfile import write_csv
    from optinspect.render.layout import Column
    from optinspect.render.page import Sheet, cell

    rows = [["a,b", 'say "x"', "1"], ["line\rbreak", "two\nlines", ""]]
    sheet = Sheet(
        "t", [Column("name"), Column("text"), Column("n")], [list(map(cell, r)) for r in rows]
    )
    buffer = io.StringIO()
    write_csv(buffer, sheet)
    write_csv(buffer, sheet, header=False)
    read = list(csv.reader(io.StringIO(buffer.getvalue(), newline="")))
    assert read == [["name", "text", "n"], *rows, *rows]


def test_tree_styles_add_no_mark_without_colour_and_a_look_with_it() -> None:
    # ``marked`` gets a "*" where there is no colour; a tree's name, class and shape must
    # not (the golden trees have none), and with colour each has a style.
    from optinspect.render.page import Cell, Run, Style
    from optinspect.render.terminal import cell_text

    for style in (Style.strong, Style.kind, Style.quiet):
        item = Cell((Run("OPTAttention", style),))
        assert cell_text(item, colour=False).plain == "OPTAttention"
        assert cell_text(item, colour=True).spans


def test_params_csv_rows_add_up_to_the_total_and_a_load_has_none() -> None:
    from optinspect.analyses.params import LoadedCount, count_params, inventory_params
    from optinspect.render.params import params_page
    from optinspect.results.params import ParamsResult

    for by in ("group", "layer", "module", "type"):
        report = count_params(inventory_params("facebook/opt-125m"), by=by)
        flat = params_page(ParamsResult(report)).flat
        assert flat is not None
        assert [c.header for c in flat.columns] == ["name", "params", *report.bytes.as_dict()]
        assert sum(int(row[1].text) for row in flat.rows) == report.total
        for column, total in enumerate(report.bytes.as_dict().values(), start=2):
            assert sum(int(row[column].text) for row in flat.rows) == total
        loaded = LoadedCount("none", "cpu", "float32", report.total, report.total, 1)
        assert params_page(ParamsResult(report, loaded)).flat is None


def test_tree_csv_rows_are_the_json_modules_in_order() -> None:
    from optinspect.analyses.tree import tree_model
    from optinspect.render.tree import tree_page
    from optinspect.results.tree import TreeResult

    for depth in (None, 0, 3):
        result = TreeResult("facebook/opt-125m", tree_model("facebook/opt-125m"), max_depth=depth)
        page = tree_page(result)
        assert page.flat is not None and page.data == result.as_dict()
        modules = result.as_dict()["modules"]
        assert [row[0].text for row in page.flat.rows] == [m["name"] for m in modules]
        assert [int(row[4].text) for row in page.flat.rows] == [m["params"] for m in modules]


def test_a_header_comes_again_only_where_it_changes() -> None:
    from optinspect.render.page import Lines, Page, fresh_headers

    model = Page("trace", headline=["model tiny"], notes=["random"])
    part = Page("depth", parts=[Lines(["charts"])])  # a report's part: no header of its own
    other = Page("params", headline=["model tiny", "241,152 parameters"])
    pages = [model, part, model, other, model]
    assert [fresh for _, fresh in fresh_headers(pages)] == [True, False, False, True, True]
