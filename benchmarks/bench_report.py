"""Rows of figures -> markdown tables, written between the markers of BENCHMARKS.md.

The file is hand-written prose with generated blocks in it::

    <!-- generated: overhead -->
    ...what run.py writes...
    <!-- generated: end -->

A run rewrites the blocks of the sections it ran (and ``header``, ``machine`` and
``goals``) and leaves everything else, the prose and the blocks of sections it did not
run, as it was. A section with no block yet is added at the end under its own heading.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

COLUMNS = ("figure", "value", "goal", "how measured")
BLOCK = re.compile(r"<!-- generated: (\S+) -->\n(.*?)<!-- generated: end -->", re.DOTALL)
MEASURED = re.compile(r"^_Measured on (.+?) by ")


@dataclass(frozen=True)
class Row:
    """One figure: its value as text, the goal it is held to (if any) and how it was taken."""

    figure: str
    value: str
    how: str = ""
    goal: str = ""
    met: bool | None = None  # against ``goal``; None where there is no goal


@dataclass
class Section:
    """What one section measured; ``data`` keeps the raw numbers (``--json``)."""

    name: str
    rows: list[Row] = field(default_factory=list)
    data: Any = None
    note: str = ""  # when it was measured, by what, at what load


def goal_cell(row: Row) -> str:
    if not row.goal:
        return ""
    return f"{row.goal}: " + {True: "met", False: "**missed**", None: "not measured"}[row.met]


def table(header: tuple[str, ...] | list[str], rows: list[list[str]]) -> str:
    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])


def render_section(section: Section) -> str:
    """The note, then one row per figure; a ``how`` that repeats the row above is not repeated."""
    rows, above = [], None
    for r in section.rows:
        rows.append([r.figure, r.value, goal_cell(r), "as above" if r.how == above else r.how])
        above = r.how
    return f"{section.note}\n\n{table(COLUMNS, rows)}\n"


def goal_rows(text: str) -> list[list[str]]:
    """Every row with a goal in the generated sections of ``text``, with its section's date."""
    found = []
    for name, body in BLOCK.findall(text):
        when = MEASURED.match(body)
        in_figures = False
        for line in body.splitlines():
            if line.startswith("| "):
                cells = [c.replace("\\|", "|") for c in re.split(r"(?<!\\) \| ", line[2:-2])]
                in_figures = in_figures or tuple(cells) == COLUMNS
                if in_figures and len(cells) == 4 and cells[2] and tuple(cells) != COLUMNS:
                    found.append(
                        [cells[0], cells[1], cells[2], name, when.group(1) if when else ""]
                    )
            elif not line.startswith("|"):
                in_figures = False
    return found


def _wrap(name: str, body: str) -> str:
    return f"<!-- generated: {name} -->\n{body}<!-- generated: end -->"


def _put(text: str, name: str, body: str) -> str:
    pattern = rf"<!-- generated: {re.escape(name)} -->\n.*?<!-- generated: end -->"
    return re.sub(pattern, lambda _: _wrap(name, body), text, count=1, flags=re.DOTALL)


def rewrite(old: str, blocks: dict[str, str], titles: dict[str, str]) -> str:
    """``old`` with each named block's body replaced by ``blocks[name]`` (added at the end,
    under a heading of its title, where ``old`` has none), then the goals block rebuilt."""
    text = old
    for name, body in blocks.items():
        if f"<!-- generated: {name} -->" in text:
            text = _put(text, name, body)
        else:
            text = text.rstrip("\n") + f"\n\n## {titles.get(name, name)}\n\n"
            text += _wrap(name, body) + "\n"
    rows = goal_rows(text)
    head = ("figure", "value", "goal", "section", "measured on")
    goals = table(head, rows) + "\n" if rows else "No section with a goal was measured.\n"
    return _put(text, "goals", goals)


def template(titles: dict[str, str]) -> str:
    """A new file: the header, machine and goals blocks, then one heading per section."""
    parts = ["# Benchmarks\n"]
    for name in ("header", *titles):
        heading = f"## {titles[name]}\n\n" if name in titles else ""
        parts.append(f"{heading}{_wrap(name, '')}\n")
    return "\n".join(parts)
