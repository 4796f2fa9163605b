"""The package's layers, read from its source: no import circle, no arrow that runs up.

Every import counts: at the top of a module, inside a function (a lazy import), and
under ``if TYPE_CHECKING:``; each is read with ``ast``, so nothing is imported here.
The layers, bottom to top (a module imports only from its own layer or those below):

    errors, results/  ->  model/  ->  engine/  ->  analyses/  ->  render/  ->  serve/
      ->  commands/  ->  cli, api, __main__, the package itself

Besides the order: ``render/`` reads records (``results/``) and module names
(``model/names``) only, never an analysis; ``serve/`` knows a job through
``analyses/job`` only, and no module it reaches imports typer; and the package
root holds at most seven modules.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "optinspect"
PACKAGE = "optinspect"

#: Bottom to top; a name is the first part of a module's path under the package.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "results"),
    ("model",),
    ("engine",),
    ("analyses",),
    ("render",),
    ("serve",),
    ("commands",),
    ("cli", "api", "__main__", "__init__"),
)
#: Modules that may import from these modules (and packages) only.
ONLY_FROM = {
    "render": ("errors", "results", "model.names", "render"),
}
#: Packages whose modules may import these modules of another top-level package only.
THROUGH = {
    "serve": {"analyses": ("analyses", "analyses.job")},
}
MAX_ROOT_MODULES = 7


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((PACKAGE, *parts))


@cache
def modules() -> dict[str, Path]:
    """Every module of the package, by dotted name (a package by its own name)."""
    return {module_name(path): path for path in sorted(SRC.rglob("*.py"))}


@cache
def root_constants() -> frozenset[str]:
    """Names the package's ``__init__`` assigns itself (``__version__``, ``STARTED``):
    importing one of them needs nothing but the package, which every import of a
    submodule runs first anyway, so it is no arrow to the top layer."""
    tree = ast.parse((SRC / "__init__.py").read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign):
            targets = [node.target]
        names.update(t.id for t in targets if isinstance(t, ast.Name))
    return frozenset(names)


def _base(name: str, path: Path, level: int) -> str:
    """The package a relative import of ``level`` dots starts from."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for _ in range(level - 1):
        package = package.rpartition(".")[0]
    return package


@cache
def imports_of(name: str) -> dict[str, set[str]]:
    """What module ``name`` imports: each target (a module of the package, or the top-level
    name of another distribution) with the lines that import it."""
    path = modules()[name]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: dict[str, set[str]] = {}

    def add(target: str, line: int) -> None:
        found.setdefault(target, set()).add(f"{path.relative_to(SRC.parent)}:{line}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = alias.name
                if target == PACKAGE or target.startswith(PACKAGE + "."):
                    add(_known(target), node.lineno)
                else:
                    add(target.partition(".")[0], node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                target = _base(name, path, node.level)
                if node.module:
                    target = f"{target}.{node.module}"
            else:
                target = node.module or ""
            if target != PACKAGE and not target.startswith(PACKAGE + "."):
                add(target.partition(".")[0], node.lineno)
                continue
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                if submodule in modules():
                    add(submodule, node.lineno)
                elif not (target == PACKAGE and alias.name in root_constants()):
                    add(_known(target), node.lineno)
    found.pop(name, None)
    return found


def _known(target: str) -> str:
    """``target``, or the nearest package above it that is a module here."""
    while target not in modules() and "." in target:
        target = target.rpartition(".")[0]
    return target


def internal_imports(name: str) -> dict[str, set[str]]:
    return {t: lines for t, lines in imports_of(name).items() if t in modules()}


def part_of(name: str) -> str:
    """The first part of a module's path under the package: ``engine``, ``cli``, ..."""
    return name.split(".")[1] if "." in name else "__init__"


def layer_of(name: str) -> int | None:
    """The index of a module's layer in LAYERS, bottom first; None when it is in none."""
    part = part_of(name)
    for index, members in enumerate(LAYERS):
        if part in members:
            return index
    return None


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == f"{PACKAGE}.{p}" or name.startswith(f"{PACKAGE}.{p}.") for p in prefixes)


def find_circles() -> list[list[str]]:
    """Every group of modules that import each other, round and round (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in internal_imports(node):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                circles.append(sorted(group))

    for name in modules():
        if name not in index:
            visit(name)
    return circles


def test_the_reader_sees_every_kind_of_import() -> None:
    # Top-level, relative, inside a function: without them the checks below pass vacuously.
    assert f"{PACKAGE}.commands.trace" in internal_imports(f"{PACKAGE}.cli")
    assert "typer" in imports_of(f"{PACKAGE}.commands.options")
    lazy = {t for n in modules() if part_of(n) == "commands" for t in internal_imports(n)}
    assert any(part_of(t) == "render" for t in lazy), "the commands' lazy imports were missed"


def test_no_module_is_outside_the_layers() -> None:
    outside = sorted(name for name in modules() if layer_of(name) is None)
    assert not outside, f"modules in no layer (add them to LAYERS in this test): {outside}"


def test_no_import_circle() -> None:
    circles = find_circles()
    described = []
    for group in circles:
        members = set(group)
        arrows = [
            f"  {source} -> {target} ({', '.join(sorted(lines))})"
            for source in group
            for target, lines in sorted(internal_imports(source).items())
            if target in members
        ]
        described.append("\n".join(arrows))
    assert not circles, "modules that import each other:\n" + "\n\n".join(described)


def test_no_import_runs_up_the_layers() -> None:
    upward = []
    for source in modules():
        below = layer_of(source)
        for target, lines in sorted(internal_imports(source).items()):
            above = layer_of(target)
            if below is not None and above is not None and above > below:
                where = ", ".join(sorted(lines))
                upward.append(f"{source} (layer {below}) -> {target} (layer {above}): {where}")
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


@pytest.mark.parametrize("part", sorted(ONLY_FROM))
def test_modules_that_read_only_records_import_nothing_else(part: str) -> None:
    allowed = ONLY_FROM[part]
    wrong = [
        f"{source} -> {target}: " + ", ".join(sorted(lines))
        for source in modules()
        if part_of(source) == part
        for target, lines in sorted(internal_imports(source).items())
        if not _within(target, allowed)
    ]
    assert not wrong, f"{part}/ imports only {', '.join(allowed)}:\n" + "\n".join(wrong)


@pytest.mark.parametrize("part", sorted(THROUGH))
def test_a_package_reaches_another_only_through_its_door(part: str) -> None:
    wrong = [
        f"{source} -> {target}: " + ", ".join(sorted(lines))
        for source in modules()
        if part_of(source) == part
        for target, lines in sorted(internal_imports(source).items())
        for other, doors in THROUGH[part].items()
        if part_of(target) == other and target not in {f"{PACKAGE}.{d}" for d in doors}
    ]
    assert not wrong, f"{part}/ goes past its door:\n" + "\n".join(wrong)


def test_nothing_the_server_reaches_imports_typer() -> None:
    # The server and its client stay free of the CLI: typer directly, or through a
    # module they import (lazily or not).
    seen: set[str] = set()
    todo = [name for name in modules() if part_of(name) == "serve"]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(internal_imports(name))
    with_typer = sorted(name for name in seen if "typer" in imports_of(name))
    assert not with_typer, "serve/ reaches typer through " + ", ".join(with_typer)


def test_the_package_root_holds_few_modules() -> None:
    root = sorted(path.name for path in SRC.glob("*.py"))
    assert len(root) <= MAX_ROOT_MODULES, f"{len(root)} modules at the package root: {root}"
