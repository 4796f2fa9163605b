"""The HTML writer, read with the standard library's parser: every command's page is one
self-contained file (nothing loads from elsewhere, a CSP forbids it), what came from the
input is text, the embedded records are what ``--format json`` prints, and the tables
hold one row per record."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import struct
import zlib
from pathlib import Path

import pytest

from conftest import sample_result
from html_pages import (
    COMMANDS,
    HOSTILE,
    assert_self_contained,
    body_rows,
    parse_page,
    same_json,
)
from optinspect.render.html import (
    CSP,
    SORT_SCRIPT,
    embedded_json,
    html_document,
    html_fragment,
    pages_data,
)
from optinspect.render.page import Chart, Column, Heatmap, Page, Series, Sheet, Style, cell
from optinspect.render.svg import MAX_RECTS, heatmap_svg, png_rgb
from optinspect.render.trace import trace_page


def run_cli(cli, *args: str) -> str:
    result = cli(*args)
    assert result.code == 0, result.err
    return result.out


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_page_is_self_contained_and_holds_its_records(cli, command: str) -> None:
    args = COMMANDS[command]
    html = run_cli(cli, *args, "--format", "html")
    page = assert_self_contained(html)
    records = page.records()
    assert list(records) == [command]
    expected = json.loads(run_cli(cli, *args, "--format", "json"))
    assert same_json(records[command], expected)
    # The hostile sentence is shown as the text it is (where the record holds it: not
    # outliers', a summary of a corpus), and nowhere as markup.
    assert (HOSTILE in page.all_text()) == ("text" in expected)
    assert not any(tag == "b" for tag, _ in page.tags)
    assert [t for t, _ in page.tags].count("script") == 2  # the records and the sort script


def test_trace_tables_hold_a_row_per_record(cli) -> None:
    html = run_cli(cli, *COMMANDS["trace"], "--format", "html")
    page = parse_page(html)
    data = page.records()["trace"]
    modules = page.table("modules")
    rows = body_rows(modules)
    assert len(rows) == len(data["modules"])
    assert set(rows) == {len(modules["header"])}
    tokens = page.table("tokens")
    assert len(body_rows(tokens)) == len(data["tokens"])
    # The FFN summary that the JSON carries is a section of its own.
    assert len(body_rows(page.table("sparsity"))) == len(data["ffn"])


def test_lens_grid_is_positions_by_layers(cli) -> None:
    page = parse_page(run_cli(cli, *COMMANDS["lens"], "--format", "html"))
    data = page.records()["lens"]
    lens = page.table("lens")
    assert len(lens["header"]) == 2 + len(data["layers"])
    assert body_rows(lens) == [len(lens["header"])] * len(data["tokens"])


def test_compare_rows_are_the_modules(cli) -> None:
    page = parse_page(run_cli(cli, *COMMANDS["compare"], "--format", "html"))
    assert len(body_rows(page.table("modules"))) == len(page.records()["compare"]["modules"])


def svg_rects(html: str, name: str) -> int:
    """The cells a heatmap part drew (its rects, less the background and colour bar)."""
    figure = html.split(f'data-name="{name}"')[1].split("</svg>")[0]
    return figure.count("<rect") - 1 - 10


def test_attention_has_its_pattern_and_a_row_per_head(cli) -> None:
    html = run_cli(cli, *COMMANDS["attention"], "--format", "html")
    page = parse_page(html)
    data = page.records()["attention"]
    assert len(body_rows(page.table("heads"))) == len(data["heads"]) == data["num_heads"]
    # The causal pattern: a cell on and below the diagonal for each query token.
    tokens = len(data["tokens"])
    assert svg_rects(html, "weights") == tokens * (tokens + 1) // 2


def test_outliers_tables_and_map_match_the_records(cli) -> None:
    html = run_cli(cli, *COMMANDS["outliers"], "--format", "html")
    page = parse_page(html)
    data = page.records()["outliers"]
    assert len(body_rows(page.table("modules"))) == len(data["modules"])
    assert data["recurring"], "the low threshold gives recurring dimensions"
    assert len(body_rows(page.table("recurring"))) == len(data["recurring"])
    # A cell for each (layer, dimension) that reached the threshold in a counted input.
    hits = {(m["layer"], d["dim"]) for m in data["modules"] if m["summary"] for d in m["dims"]}
    assert svg_rects(html, "dimensions") == len(hits)


def test_params_rows_add_up_and_tree_has_an_entry_per_module(cli) -> None:
    page = parse_page(run_cli(cli, *COMMANDS["params"], "--format", "html"))
    data = page.records()["params"]
    assert len(body_rows(page.table("params"))) == len(data["rows"]) + 1  # and the total
    html = run_cli(cli, *COMMANDS["tree"], "--format", "html")
    page = parse_page(html)
    entries = [t for t, _ in page.tags if t == "li"]
    assert len(entries) == len(page.records()["tree"]["modules"])
    # Entries with entries under them open and close without script.
    assert html.count("<details open>") == sum(1 for t, _ in page.tags if t == "ul") - 1


def test_calibrate_tables_match_the_records(cli) -> None:
    page = parse_page(run_cli(cli, *COMMANDS["calibrate"], "--format", "html"))
    data = page.records()["calibrate"]
    assert len(body_rows(page.table("inputs"))) == len(data["modules"])
    layers = [o for o in data["outputs"] if re.fullmatch(r"model\.decoder\.layers\.\d+", o["name"])]
    assert len(body_rows(page.table("outputs"))) == len(layers)


def test_several_sentences_are_one_document_with_a_section_each(cli, tmp_path: Path) -> None:
    path = tmp_path / "s.txt"
    path.write_text(f"The cat sat\n{HOSTILE}\n", encoding="utf-8")
    args = ("lens", "--file", str(path), "--model", "tiny", "-q", "none")
    html = run_cli(cli, *args, "--format", "html")
    page = assert_self_contained(html)
    assert html.count("<!DOCTYPE html>") == 1
    assert [a.get("class") for t, a in page.tags if t == "section"] == ["kind-lens"] * 2
    expected = json.loads(run_cli(cli, *args, "--format", "json"))
    assert same_json(page.records()["lens"], expected)
    assert len(page.records()["lens"]["results"]) == 2


def test_an_input_without_sentences_is_still_a_page(cli, tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_text("\n", encoding="utf-8")
    args = ("lens", "--file", str(path), "--model", "tiny", "-q", "none")
    page = assert_self_contained(run_cli(cli, *args, "--format", "html"))
    assert page.records() == {"lens": json.loads(run_cli(cli, *args, "--format", "json"))}


def test_a_module_name_with_markup_is_text() -> None:
    result = sample_result()
    odd = dataclasses.replace(result.modules[3], name="model.decoder.layers.0.a<b>&c</td>")
    result = dataclasses.replace(result, modules=(*result.modules[:3], odd))
    html = html_document([trace_page(result)], title="x </title><script>")
    page = assert_self_contained(html)
    assert "a<b>&c</td>" in page.all_text()
    assert "a&lt;b&gt;&amp;c&lt;/td&gt;" in html
    assert page.records()["trace"]["modules"][3]["name"] == odd.name
    assert len(body_rows(page.table("modules"))) == len(result.modules)


def test_the_records_cannot_close_their_script() -> None:
    data = {"text": "</script><script>alert(1)</script><!--"}
    text = embedded_json(data)
    assert "<" not in text
    assert json.loads(text) == data
    html = html_document([Page("trace", data=data)], title="t")
    assert parse_page(html).records() == {"trace": data}


def test_the_sort_script_is_allowed_by_its_hash_alone() -> None:
    import hashlib

    digest = base64.b64encode(hashlib.sha256(SORT_SCRIPT.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in CSP
    html = html_document([], title="t")
    scripts = [body for attrs, body in parse_page(html).scripts if "type" not in attrs]
    assert scripts == [SORT_SCRIPT]


def test_pages_of_one_kind_are_listed() -> None:
    pages = [Page("lens", data={"index": 0}), Page("lens", data={"index": 1}), Page("params")]
    assert pages_data(pages) == {"lens": [{"index": 0}, {"index": 1}]}
    assert pages_data(pages[:1]) == {"lens": {"index": 0}}


def big_sheet(rows: int) -> Sheet:
    return Sheet(
        "numbers",
        [Column("i"), Column("value")],
        [[cell(str(i)), cell(f"{i / 3:.3g}", value=i / 3)] for i in range(rows)],
        name="numbers",
    )


def test_a_fragment_is_scoped_cut_and_scriptless() -> None:
    html = html_fragment([Page("x", parts=[big_sheet(100)])], max_rows=60)
    page = assert_self_contained(html, document=False)
    div = page.tags[0]
    assert div[0] == "div" and div[1]["class"] == "optinspect"
    scope = "#" + div[1]["id"]
    rules = [r.strip() for r in re.split(r"}", page.styles[0]) if r.strip()]
    assert all(all(s.strip().startswith(scope) for s in r.split("{")[0].split(",")) for r in rules)
    assert not page.scripts
    table = page.table("numbers")
    cut = [cls for cls, _ in table["rows"] if cls == "cut"]
    assert len(cut) == 1 and len(table["rows"]) == 61
    assert "40 rows not shown" in page.all_text()
    # Side by side in one notebook: two outputs, two scopes.
    assert html_fragment([]).split('id="')[1][:24] != html_fragment([]).split('id="')[1][:24]


def test_a_short_table_is_whole_in_a_fragment() -> None:
    page = parse_page(html_fragment([Page("x", parts=[big_sheet(60)])], max_rows=60))
    assert len(page.table("numbers")["rows"]) == 60


def test_cells_carry_their_value_tip_and_style() -> None:
    sheet = Sheet(
        "s",
        [Column("a"), Column("b")],
        [[cell("nan", Style.nonfinite, value=float("nan")), cell("1", value=1, tip="one <1>")]],
    )
    html = html_document([Page("x", parts=[sheet])], title="t")
    assert '<td class="n" data-value="NaN" data-nonfinite=""><span class="s-nonfinite">nan' in html
    assert 'title="one &lt;1&gt;" data-value="1"' in html


def grid(rows: int, cols: int, marked: set[tuple[int, int]]) -> Heatmap:
    values = [[5.0 if (r, c) in marked else 0.0 for c in range(cols)] for r in range(rows)]
    return Heatmap(
        "counts", [f"L{r}" for r in range(rows)], [str(c) for c in range(cols)], values, high=10.0
    )


def test_a_sparse_heatmap_draws_only_its_marked_cells() -> None:
    marked = {(0, 5), (3, 700), (11, 767)}
    svg = heatmap_svg(grid(12, 768, marked))
    # The background, the marked cells, and the ten steps of the colour bar.
    assert svg.count("<rect") == 1 + len(marked) + 10
    assert svg.count("<title>") == 1 + len(marked)
    assert "L3, 700: 5" in svg


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and the rows (filter 0 only) of a truecolour PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        assert (
            zlib.crc32(kind + body) & 0xFFFFFFFF
            == struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])[0]
        )
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = 1 + 3 * width
    rows = [raw[i * stride : (i + 1) * stride] for i in range(height)]
    assert all(row[0] == 0 for row in rows)
    return width, height, [row[1:] for row in rows]


def test_a_dense_heatmap_is_one_png_of_its_cells() -> None:
    marked = {(r, c) for r in range(12) for c in range(768) if (r + c) % 3}
    assert len(marked) > MAX_RECTS
    svg = heatmap_svg(grid(12, 768, marked))
    assert svg.count("<image") == 1 and svg.count("<rect") == 1 + 10
    data = base64.b64decode(svg.split("base64,")[1].split('"')[0])
    width, height, rows = decode_png(data)
    assert (width, height) == (768, 12)
    # A marked cell and an unmarked one differ; every unmarked cell has one colour.
    assert rows[0][3:6] != rows[0][0:3]
    assert {rows[r][3 * c : 3 * c + 3] for r, c in [(0, 0), (0, 3), (5, 1)]} == {rows[0][0:3]}
    # Bytes per cell, not per rect: well under the 9,216 rects it replaces.
    assert len(svg) < 20_000


def test_png_round_trips() -> None:
    pixels = [[(r, c, 7) for c in range(5)] for r in range(3)]
    width, height, rows = decode_png(png_rgb(pixels))
    assert (width, height) == (5, 3)
    assert rows[2][3:6] == bytes((2, 1, 7))


def test_a_chart_has_a_line_per_series_and_gaps() -> None:
    chart = Chart(
        "depth",
        "layer",
        list(range(6)),
        [Series("a", [1, 2, None, 4, 5, 6]), Series("b <x>", [float("inf"), 1, 1, 1, 1, 1])],
        log=True,
    )
    html = html_document([Page("x", parts=[chart])], title="t")
    page = assert_self_contained(html)
    paths = [a["d"] for t, a in page.tags if t == "path"]
    assert len(paths) == 2
    assert paths[0].count("M") == 2  # broken at the None
    assert paths[1].count("M") == 1 and paths[1].count("L") == 4  # inf left out
    assert "b <x>" in page.all_text()


def test_a_chart_of_many_lines_names_them_on_hover() -> None:
    x = list(range(201))
    series = [
        Series(f"model.decoder.layers.{k}.self_attn.k_proj", [k + i for i in x]) for k in range(20)
    ]
    svg = html_document([Page("x", parts=[Chart("many", "share", x, series)])], title="t")
    assert svg.count("<path") == 20 and "<circle" not in svg
    assert "20 lines: hover one" in svg
    assert svg.count("<title>model.decoder.layers.") == 20
    assert len(svg) < 130_000  # about 20 bytes a point


@pytest.mark.slow
def test_an_opt125m_sized_page_is_under_budget(cli, make_fixture_model) -> None:
    folder = make_fixture_model(
        "opt125m-like",
        hidden_size=768,
        ffn_dim=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        word_embed_proj_dim=768,
    )
    sentence = "the the the the the the the the"  # nine tokens and </s> in the tiny vocabulary
    html = run_cli(
        cli,
        "trace",
        sentence,
        "--model",
        str(folder),
        "-q",
        "none",
        "--layer",
        "all",
        "--format",
        "html",
    )
    page = assert_self_contained(html)
    assert len(page.records()["trace"]["tokens"]) == 10
    size = len(html.encode())
    print(f"opt-125m-sized trace --layer all page: {size} bytes")
    assert size < 1_000_000


def test_a_causal_map_leaves_the_upper_triangle_as_one_shape() -> None:
    n = 30
    values = [[(c + 1) / (r + 1) if c <= r else None for c in range(n)] for r in range(n)]
    labels = [f"token {i} with a long label that is cut" for i in range(n)]
    svg = heatmap_svg(Heatmap("pattern", labels, labels, values, causal=True))
    # The background, a rect per cell on or below the diagonal, the colour bar's steps.
    assert svg.count("<rect") == 1 + n * (n + 1) // 2 + 10
    assert svg.count("<path") == 1
    # A cut label keeps the whole of it for hover.
    assert f"<title>{labels[3]}</title>" in svg


def test_histograms_are_a_row_each_and_a_path_each() -> None:
    from optinspect.render.page import Bins, Histograms

    rows = [
        Bins(f"model.decoder.layers.{i}.fc1<&>", -1.5, 2.0, [i, 0, 3, 64, 5] * 12 + [1] * 4)
        for i in range(12)
    ]
    part = Histograms("output values", rows, name="histograms")
    page = assert_self_contained(html_document([Page("trace", parts=[part])], title="t"))
    table = page.table("histograms")
    assert len(table["rows"]) == 12
    assert [t for t, _ in page.tags].count("path") == 12
    assert "model.decoder.layers.3.fc1<&>" in page.all_text()
    cut = parse_page(html_fragment([Page("trace", parts=[part])], max_rows=4))
    assert len(cut.table("histograms")["rows"]) == 5
    # A few bytes a bin: 12 rows of 64 bins stay small.
    assert len(html_document([Page("trace", parts=[part])], title="t")) < 20_000


def test_a_non_finite_cell_is_grey_and_says_so() -> None:
    values = [[0.0, float("nan")], [float("inf"), 0.5]]
    svg = heatmap_svg(Heatmap("m", ["a", "b"], ["x", "y"], values))
    assert '<rect x="' in svg
    assert 'fill="#dddddd"><title>a, y: nan</title>' in svg
    assert 'fill="#dddddd"><title>b, x: inf</title>' in svg


def test_a_log_chart_ticks_at_powers_of_ten() -> None:
    # log10 spans 0 to 2.4: even steps of 0.5 would label 3.162 and 31.62.
    chart = Chart("c", "x", [0, 1, 2], [Series("s", [1.0, 30.0, 250.0])], log=True)
    page = assert_self_contained(html_document([Page("x", parts=[chart])], title="t"))
    labels = [t.strip() for t in page.text if t.strip()]
    assert {"1", "10", "100"} <= set(labels)
    assert "3.162" not in labels and "31.62" not in labels
