"""The README and docs/ stay true to the code: links lead somewhere, every command has its
reference section and a README example, and every option ``--help`` lists is documented.

The commands and options are read from the real ``--help`` output, so a new command or
option fails here until docs/cli.md describes it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
CLI_DOC = DOCS / "cli.md"
TEST_COMMAND = "bash scripts/setup.sh && .venv/bin/python -m pytest"
README_MAX_LINES = 400

_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def documents() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def prose_lines(path: Path) -> list[str]:
    """The lines of a Markdown file outside fenced code blocks."""
    lines, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def code_lines(path: Path) -> list[str]:
    """The lines of a Markdown file inside fenced code blocks."""
    lines, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        elif fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    """Every anchor a file's headings give, with GitHub's -1, -2 for repeats."""
    seen: dict[str, int] = {}
    found = set()
    for line in prose_lines(path):
        match = _HEADING.match(line)
        if match is None:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return frozenset(found)


def links(path: Path) -> list[str]:
    """The link targets of a Markdown file, outside code."""
    targets = []
    for line in prose_lines(path):
        targets.extend(_LINK.findall(_INLINE_CODE.sub("", line)))
    return targets


@pytest.mark.parametrize("path", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file_and_heading(path: Path) -> None:
    broken = []
    for target in links(path):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        file_part, _, fragment = target.partition("#")
        file = (path.parent / file_part).resolve() if file_part else path
        if not file.exists():
            broken.append(f"{target}: no file {file}")
        elif fragment and file.suffix == ".md" and fragment not in anchors(file):
            broken.append(f"{target}: no heading #{fragment} in {file.name}")
    assert not broken, f"{path.name} has broken links:\n" + "\n".join(broken)


def test_readme_is_a_front_door() -> None:
    text = README.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) < README_MAX_LINES, f"README.md has {len(lines)} lines"
    # CI (.ci/run) runs the README's test command: the README must give it.
    assert TEST_COMMAND in code_lines(README)
    assert ".venv/bin/python -m pytest" in text


def test_readme_links_every_page_of_docs() -> None:
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in links(README)}
    missing = [p.name for p in sorted(DOCS.glob("*.md")) if p.resolve() not in linked]
    assert not missing, f"README.md links no docs/{missing}"


@pytest.fixture(scope="module")
def help_text() -> Callable[..., str]:
    """``optinspect [COMMAND] --help`` as the real entry point prints it."""
    import contextlib
    import io

    from optinspect.cli import run

    @cache
    def text(*args: str) -> str:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = run([*args, "--help"])
        assert code == 0, args
        return out.getvalue()

    return text


def help_section(text: str, title: str) -> list[str]:
    """The lines of one section (``Commands:``, ``Options:``) of a --help text."""
    lines = text.splitlines()
    start = lines.index(title) + 1
    section = []
    for line in lines[start:]:
        if line and not line.startswith(" "):
            break
        section.append(line)
    return section


def commands(help_text: Callable[..., str]) -> list[str]:
    """The commands ``optinspect --help`` lists."""
    rows = help_section(help_text(), "Commands:")
    return [m.group(1) for row in rows if (m := re.match(r"^  (\w[\w-]*)\s", row))]


def listed_options(help_text: Callable[..., str], command: str) -> set[str]:
    """The long options ``optinspect COMMAND --help`` lists (both of a --x/--no-x pair)."""
    found = set()
    for row in help_section(help_text(command), "Options:"):
        if not re.match(r"^  -", row):
            continue  # a wrapped description
        spec = re.split(r"\s{2,}", row.strip())[0]
        found.update(_OPTION.findall(spec))
    return found - {"--help"}


def cli_section(command: str) -> str:
    """The text of ``## `optinspect COMMAND ...` `` in docs/cli.md, up to the next ``## ``."""
    text = CLI_DOC.read_text(encoding="utf-8")
    match = re.search(rf"^## `optinspect {command}\b.*?(?=^## |\Z)", text, re.M | re.S)
    assert match, f"docs/cli.md has no section '## `optinspect {command} ...`'"
    return match.group(0)


def test_help_lists_the_commands(help_text: Callable[..., str]) -> None:
    assert "trace" in commands(help_text)
    assert "--layer" in listed_options(help_text, "trace")


def test_every_command_has_a_reference_section_and_a_readme_example(
    help_text: Callable[..., str],
) -> None:
    examples = code_lines(README)
    for command in commands(help_text):
        cli_section(command)
        pattern = re.compile(rf"^(\$ )?optinspect {command}\b")
        assert any(pattern.match(line) for line in examples), (
            f"README.md shows no example of optinspect {command}"
        )


def test_every_option_of_every_command_is_in_its_reference_section(
    help_text: Callable[..., str],
) -> None:
    undocumented = {}
    for command in commands(help_text):
        present = set(_OPTION.findall(cli_section(command)))
        missing = sorted(listed_options(help_text, command) - present)
        if missing:
            undocumented[command] = missing
    assert not undocumented, f"options missing from docs/cli.md: {undocumented}"
