"""Every command's HTML page in a real browser: headless Chromium driven by selenium opens
it from a file and finds no console error, no request that is not ``file:`` (or an
inline ``data:`` image), no script from the input run, its tables and pictures there, a
working sort, and a screenshot that is not blank.

Debian's ``chromium`` and ``chromium-driver`` (``apt-get install chromium
chromium-driver``) and ``pip install selenium``; where any is missing these tests skip
and say which. ``pytest -m browser`` selects them; one browser serves the session.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from html_pages import COMMANDS, HOSTILE, parse_page
from optinspect.render.html import html_document, html_fragment
from optinspect.render.page import (
    Bins,
    Chart,
    Column,
    Heatmap,
    Histograms,
    Page,
    Series,
    Sheet,
    cell,
)

pytestmark = pytest.mark.browser

CHROMIUM = ("/usr/bin/chromium", "chromium", "chromium-browser")
CHROMEDRIVER = ("/usr/bin/chromedriver", "chromedriver")


def _find(candidates: tuple[str, ...]) -> str | None:
    for name in candidates:
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless Chromium for the session, logging the console and the network."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed: pip install selenium")
    binary, driver_path = _find(CHROMIUM), _find(CHROMEDRIVER)
    if binary is None or driver_path is None:
        pytest.skip("Chromium is missing: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root in a container
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1200,1000",
        "--no-first-run",
        "--disable-background-networking",  # the browser's own requests are not the page's
        "--disable-component-update",
        "--disable-sync",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def open_page(browser: Any, path: Path) -> dict[str, list[str]]:
    """Load ``path`` and return what it logged: console errors and the URLs it asked for."""
    browser.get_log("browser")  # drop what earlier pages left
    browser.get_log("performance")
    browser.get(path.resolve().as_uri())
    errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    requests = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            requests.append(message["params"]["request"]["url"])
    return {"errors": errors, "requests": requests}


def assert_clean(browser: Any, path: Path, title: str) -> None:
    seen = open_page(browser, path)
    assert seen["errors"] == []
    outside = [u for u in seen["requests"] if not u.startswith(("file:", "data:"))]
    assert outside == []
    assert browser.title == title, "a script from the input changed the title"
    assert browser.execute_script("return window.pwned === undefined")


def distinct_colours(png: bytes) -> int:
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    return len(image.getcolors(maxcolors=1 << 20) or [])


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_page_opens_clean(browser, cli, tmp_path: Path, command: str) -> None:
    result = cli(*COMMANDS[command], "--format", "html")
    assert result.code == 0, result.err
    path = tmp_path / f"{command}.html"
    path.write_text(result.out, encoding="utf-8")
    assert_clean(browser, path, f"optinspect {command}: tiny")
    from selenium.webdriver.common.by import By

    assert browser.find_elements(By.CSS_SELECTOR, "table tbody tr, .tree li")
    if command == "tree":  # an entry folds away its entries, without script
        details = browser.find_elements(By.CSS_SELECTOR, ".tree details")[1]
        inner = details.find_element(By.CSS_SELECTOR, "ul li")
        assert inner.is_displayed()
        details.find_element(By.TAG_NAME, "summary").click()
        assert not inner.is_displayed()
    if command in ("attention", "outliers"):  # their heatmaps, drawn
        (figure,) = browser.find_elements(By.CSS_SELECTOR, "figure svg")
        assert figure.size["width"] > 100 and figure.size["height"] > 40
    records = browser.execute_script(
        "return JSON.parse(document.getElementById('optinspect-data').textContent)"
    )
    assert list(records) == [command]
    if "text" in records[command]:  # outliers summarises a corpus: no sentence is shown
        assert HOSTILE in browser.find_element(By.TAG_NAME, "body").text
    # Text, lines and the table rules: a rendered page has many colours, a blank one one.
    assert distinct_colours(browser.get_screenshot_as_png()) > 8


def pictures_page() -> Page:
    counts = [[(3.0 if (r * 7 + c) % 97 == 0 else 0.0) for c in range(768)] for r in range(12)]
    dense = [[((r * 31 + c * 17) % 100) / 100 for c in range(768)] for r in range(12)]
    return Page(
        "pictures",
        headline=["model <m>"],
        parts=[
            Heatmap(
                "sparse",
                [str(r) for r in range(12)],
                [str(c) for c in range(768)],
                counts,
                high=3.0,
            ),
            Heatmap("dense", [str(r) for r in range(12)], [str(c) for c in range(768)], dense),
            Chart("depth", "layer", list(range(12)), [Series("mean", [r / 3 for r in range(12)])]),
            Histograms(
                "values",
                [Bins(f"m{i}", -1.0, 1.0, [(b * 7 + i) % 13 for b in range(64)]) for i in range(3)],
            ),
            Sheet(
                "sortable",
                [Column("name", justify="left"), Column("value")],
                [[cell(n), cell(str(v), value=v)] for n, v in [("b", 2.5), ("a", 10), ("c", -1)]],
                name="sortable",
            ),
        ],
    )


def test_pictures_draw_and_tables_sort(browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    path = tmp_path / "pictures.html"
    path.write_text(html_document([pictures_page()], title="pictures"), encoding="utf-8")
    assert_clean(browser, path, "pictures")
    svgs = browser.find_elements(By.CSS_SELECTOR, "figure svg")
    assert len(svgs) == 3
    assert all(svg.size["width"] > 100 and svg.size["height"] > 50 for svg in svgs)
    hists = browser.find_elements(By.CSS_SELECTOR, "svg.hist")
    assert len(hists) == 3 and all(h.size["width"] == 192 for h in hists)
    # The dense map's PNG decoded: its image has the size the grid gives it.
    image = browser.find_element(By.CSS_SELECTOR, "svg image")
    assert image.size["width"] > 500
    table = browser.find_element(By.CSS_SELECTOR, "table[data-name=sortable]")

    def values() -> list[str]:
        return [
            row.find_elements(By.TAG_NAME, "td")[1].text
            for row in table.find_elements(By.CSS_SELECTOR, "tbody tr")
        ]

    assert values() == ["2.5", "10", "-1"]
    header = table.find_elements(By.CSS_SELECTOR, "thead th")[1]
    header.click()
    assert values() == ["-1", "2.5", "10"]  # by number, not by text
    header.click()
    assert values() == ["10", "2.5", "-1"]
    header.click()
    assert values() == ["2.5", "10", "-1"]  # back to the order it came in
    assert distinct_colours(browser.get_screenshot_as_png()) > 20


def test_fragments_side_by_side_keep_their_own_styles(browser, tmp_path: Path) -> None:
    """Two notebook outputs in one page: each fragment's CSS reaches its own div only."""
    from selenium.webdriver.common.by import By

    page = Page("x", parts=[pictures_page().parts[-1]])
    shell = "<!DOCTYPE html><html><head><title>cells</title></head><body>{}{}<p id=outside>"
    path = tmp_path / "cells.html"
    path.write_text(shell.format(html_fragment([page]), html_fragment([page])), encoding="utf-8")
    assert_clean(browser, path, "cells")
    assert len(browser.find_elements(By.CSS_SELECTOR, "div.optinspect table")) == 2
    outside = browser.find_element(By.ID, "outside")
    inside = browser.find_element(By.CSS_SELECTOR, "div.optinspect")
    assert outside.value_of_css_property("font-family") != inside.value_of_css_property(
        "font-family"
    )


@pytest.mark.parametrize(
    "body",
    [
        '<img src="https://example.invalid/x.png">',  # a request that is not file:
        "<script>document.title='pwned'</script>",  # input that ran
        "<script>undefined_function()</script>",  # a console error
    ],
)
def test_the_checks_catch_a_page_that_breaks_them(browser, tmp_path: Path, body: str) -> None:
    """The same checks on pages made to fail them: each is caught."""
    path = tmp_path / "bad.html"
    path.write_text(f"<!DOCTYPE html><title>bad</title>{body}", encoding="utf-8")
    with pytest.raises(AssertionError):
        assert_clean(browser, path, "bad")


def test_the_report_opens_clean_with_its_pictures(browser, cli, tmp_path: Path) -> None:
    """``optinspect report``'s page: the same checks, its charts, heatmaps and histograms
    drawn, every table filled."""
    from selenium.webdriver.common.by import By

    path = tmp_path / "report.html"
    result = cli("report", HOSTILE, "--model", "tiny", "-q", "none", "--out", str(path))
    assert result.code == 0, result.err
    title = parse_page(path.read_text(encoding="utf-8")).title
    assert_clean(browser, path, title)
    assert HOSTILE in browser.find_element(By.TAG_NAME, "body").text
    figures = browser.find_elements(By.CSS_SELECTOR, "figure svg")
    assert len(figures) >= 3
    assert all(f.size["width"] > 100 and f.size["height"] > 40 for f in figures)
    assert browser.find_elements(By.CSS_SELECTOR, "svg.hist")
    tables = browser.find_elements(By.CSS_SELECTOR, "table")
    assert tables and all(t.find_elements(By.CSS_SELECTOR, "tbody tr") for t in tables)
    assert distinct_colours(browser.get_screenshot_as_png()) > 20
