"""What the HTML tests share: each command's page made through the CLI, and a parse of a
page into what the checks read (tags, text, scripts, the embedded records)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

#: A sentence that would run script if it reached the page unescaped: it sets the title.
HOSTILE = "<script>document.title='pwned';window.pwned=1</script> & <b>bold</b>"

#: Each command's arguments for a page of the tiny model (the format comes after).
COMMANDS: dict[str, tuple[str, ...]] = {
    "trace": ("trace", HOSTILE, "--model", "tiny", "-q", "none", "--layer", "all"),
    "lens": ("lens", HOSTILE, "--model", "tiny", "-q", "none"),
    "compare": ("compare", HOSTILE, "--model", "tiny", "--layer", "all"),
    "attention": ("attention", HOSTILE, "--model", "tiny", "--layer", "1"),
    # A low threshold, so the random weights give outliers to tabulate and draw.
    "outliers": ("outliers", HOSTILE, "--model", "tiny", "-q", "none", "--threshold", "2"),
    "calibrate": ("calibrate", HOSTILE, "--model", "tiny"),
    "params": ("params", "--model", "tiny"),
    "tree": ("tree", "--model", "tiny"),
}

#: Attributes that could make a browser fetch something.
URL_ATTRIBUTES = {"src", "href", "xlink:href", "action", "formaction", "srcset", "poster", "data"}
#: A reference to another place: a scheme or a protocol-relative ``//``.
OUTSIDE = re.compile(r"(https?:|//|ftp:|file:)", re.IGNORECASE)


@dataclass
class Parsed:
    """A page as the checks read it."""

    tags: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    scripts: list[tuple[dict[str, str], str]] = field(default_factory=list)
    styles: list[str] = field(default_factory=list)
    #: The text of the document's ``<title>``.
    title: str = ""
    #: Each table: its data-name, the header cells, and its body rows as (class, cell count).
    tables: list[dict[str, Any]] = field(default_factory=list)

    def records(self) -> dict[str, Any]:
        """The embedded records (``#optinspect-data``), parsed."""
        found = [body for attrs, body in self.scripts if attrs.get("id") == "optinspect-data"]
        assert len(found) == 1, "one embedded record block"
        return json.loads(found[0])

    def table(self, name: str) -> dict[str, Any]:
        found = [t for t in self.tables if t["name"] == name]
        assert found, f"no table {name!r} in {[t['name'] for t in self.tables]}"
        return found[0]

    def all_text(self) -> str:
        return "".join(self.text)


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Parsed()
        self._raw: str | None = None  # inside <script> or <style>
        self._raw_attrs: dict[str, str] = {}
        self._buffer: list[str] = []
        self._table: dict[str, Any] | None = None
        self._section = ""
        self._row: list[str] | None = None
        self._row_class = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {key: value or "" for key, value in attrs}
        self.page.tags.append((tag, values))
        if tag in ("script", "style"):
            self._raw, self._raw_attrs, self._buffer = tag, values, []
        elif tag == "table":
            self._table = {"name": values.get("data-name", ""), "header": [], "rows": []}
        elif tag in ("thead", "tbody"):
            self._section = tag
        elif tag == "tr" and self._table is not None:
            self._row, self._row_class = [], values.get("class", "")
        elif tag in ("td", "th") and self._row is not None:
            self._row.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == self._raw:
            body = "".join(self._buffer)
            if tag == "script":
                self.page.scripts.append((self._raw_attrs, body))
            else:
                self.page.styles.append(body)
            self._raw = None
        elif tag == "tr" and self._table is not None and self._row is not None:
            if self._section == "thead":
                self._table["header"] = self._row
            else:
                self._table["rows"].append((self._row_class, len(self._row)))
            self._row = None
        elif tag == "table" and self._table is not None:
            self.page.tables.append(self._table)
            self._table = None

    def handle_data(self, data: str) -> None:
        if self.page.tags and self.page.tags[-1][0] == "title" and not self.page.title:
            self.page.title = data
        if self._raw is not None:
            self._buffer.append(data)
        else:
            self.page.text.append(data)


def parse_page(html: str) -> Parsed:
    """``html`` parsed by the standard library's parser (which raises on nothing, so the
    checks below say what must hold)."""
    parser = _Parser()
    parser.feed(html)
    parser.close()
    return parser.page


def assert_self_contained(html: str, *, document: bool = True) -> Parsed:
    """Nothing in ``html`` can load from elsewhere, no input ran as script, and a document
    carries its CSP; returns the parse."""
    page = parse_page(html)
    for tag, attrs in page.tags:
        for key, value in attrs.items():
            if key in URL_ATTRIBUTES and not value.startswith(("data:", "#")):
                assert not OUTSIDE.search(value), f"<{tag} {key}={value!r}>"
            assert not key.startswith("on"), f"an event handler on <{tag}>: {key}"
            if key == "style":
                assert "url(" not in value.replace("url(data:", "").replace("url(#", "")
    for css in page.styles:
        assert "@import" not in css
        assert "url(" not in css, "the style sheet refers to nothing"
    for attrs, _ in page.scripts:
        assert "src" not in attrs, "no script is loaded"
    executable = [body for attrs, body in page.scripts if attrs.get("type") != "application/json"]
    assert not any("pwned" in body for body in executable), "input reached a script"
    if document:
        policy = [a["content"] for t, a in page.tags if t == "meta" and "http-equiv" in a]
        assert len(policy) == 1 and "default-src 'none'" in policy[0]
        assert "'unsafe-inline'" not in policy[0].split("script-src")[-1].split(";")[0]
    return page


def body_rows(table: dict[str, Any]) -> list[int]:
    """The cell counts of a table's rows, leaving out the rows that head a layer."""
    return [cells for cls, cells in table["rows"] if "heading" not in cls.split()]


def same_json(a: Any, b: Any, rel: float = 1e-6) -> bool:
    """Equal documents, floats to ``rel``: the same computation run twice may split a
    reduction across threads differently, which moves the last bits and nothing else."""
    if isinstance(a, float) or isinstance(b, float):
        if not isinstance(a, int | float) or not isinstance(b, int | float):
            return False
        return math.isclose(a, b, rel_tol=rel, abs_tol=1e-9)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k], rel) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y, rel) for x, y in zip(a, b, strict=True))
    return a == b
