"""What a local load of OPT imports: who pulls in ``torch._dynamo``, and what it costs.

The evidence comes from a fresh process (this file run with ``--worker``) that
installs a ``sys.meta_path`` finder recording the stack each time a module is first
looked for, then runs ``optinspect trace`` in-process through ``optinspect.cli.run``.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import re
import statistics
import sys
import traceback
from pathlib import Path
from typing import Any

TARGET = "torch._dynamo"
#: The command the worker runs: a local load of the tiny model, nothing quantized.
TRACE_OPTIONS = ["--model", "tiny", "--quant", "none", "--format", "json", "--no-server"]
WORKER_ARGS = ["trace", "Hello", *TRACE_OPTIONS]
WORKER_LABEL = 'optinspect trace "Hello" ' + " ".join(TRACE_OPTIONS)
#: The modules the issue names as importers of torch._dynamo.
NAMED_IN_ISSUE = (
    "transformers.masking_utils",
    "transformers.generation.continuous_batching.cache",
    "transformers.integrations.deepgemm",
)
#: The modules whose cumulative ``-X importtime`` the report shows.
IMPORTTIME_MODULES = (
    "torch",
    "transformers",
    "transformers.masking_utils",
    TARGET,
    "transformers.models.opt.modeling_opt",
)
IMPORTTIME_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)")
_ROOTS = ("optinspect/", "transformers/", "torch/")
#: transformers' lazy module: its frames sit between every importer and what it imports.
LAZY_MODULE = "transformers/utils/import_utils.py"


def short_path(filename: str) -> str | None:
    """``optinspect/...``, ``transformers/...`` or ``torch/...``; None for other code."""
    for marker in ("/site-packages/", "/src/"):
        if marker in filename:
            rest = filename.split(marker, 1)[1]
            return rest if rest.startswith(_ROOTS) else None
    return None


def frames(stack: list[traceback.FrameSummary]) -> list[dict[str, Any]]:
    """The frames of optinspect, transformers and torch, outermost first."""
    kept = []
    for frame in stack:
        where = short_path(frame.filename)
        if where is not None:
            kept.append({"file": where, "line": frame.lineno, "code": frame.line or ""})
    return kept


def dynamo_references(path: str) -> tuple[list[int], list[int]]:
    """Lines of ``path`` that name torch._dynamo: run when the module is imported, and inside
    functions (run only when called)."""
    at_import: set[int] = set()
    in_functions: set[int] = set()

    def names_target(node: ast.AST) -> bool:
        if isinstance(node, ast.Import):
            return any(a.name == TARGET or a.name.startswith(TARGET + ".") for a in node.names)
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "torch":
                return any(a.name == "_dynamo" for a in node.names)
            return node.module == TARGET or node.module.startswith(TARGET + ".")
        return (
            isinstance(node, ast.Attribute)
            and node.attr == "_dynamo"
            and isinstance(node.value, ast.Name)
            and node.value.id == "torch"
        )

    def visit(node: ast.AST, deferred: bool) -> None:
        if names_target(node):
            (in_functions if deferred else at_import).add(node.lineno)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            # Decorators and defaults run at definition; the body runs when called.
            body = node.body if isinstance(node.body, list) else [node.body]
            for child in ast.iter_child_nodes(node):
                visit(child, deferred or child in body)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, deferred)

    visit(ast.parse(Path(path).read_text(encoding="utf-8")), False)
    return sorted(at_import), sorted(in_functions)


def worker() -> dict[str, Any]:
    """Run the trace in-process under the finder; what was imported, and from where."""
    first: dict[str, list[traceback.FrameSummary]] = {}

    class Recorder:
        def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
            if (name == TARGET or name.startswith("transformers")) and name not in first:
                first[name] = traceback.extract_stack()[:-1]

    sys.meta_path.insert(0, Recorder())
    from optinspect.cli import run

    with contextlib.redirect_stdout(io.StringIO()):
        code = run(WORKER_ARGS)
    importers = []
    for name, module in sorted(sys.modules.items()):
        filename = getattr(module, "__file__", None)
        if not name.startswith("transformers") or not filename or not filename.endswith(".py"):
            continue
        at_import, in_functions = dynamo_references(filename)
        if at_import or in_functions or name in NAMED_IN_ISSUE:
            chain = [f for f in frames(first.get(name, [])) if f["file"] != LAZY_MODULE]
            importers.append(
                {
                    "module": name,
                    "file": short_path(filename),
                    "at_import": at_import,
                    "in_functions": in_functions,
                    "imported_by": chain[-1] if chain else None,
                }
            )
    loaded = set(sys.modules)
    return {
        "exit": code,
        "dynamo_loaded": TARGET in loaded,
        "bitsandbytes_loaded": "bitsandbytes" in loaded,
        "chain": frames(first.get(TARGET, [])),
        "importers": importers,
        "named_loaded": {name: name in loaded for name in NAMED_IN_ISSUE},
    }


def import_chain() -> dict[str, Any]:
    """The worker's findings, from a fresh process."""
    from bench_cli import child_env
    from bench_util import last_line, run_child

    run = run_child([sys.executable, __file__, "--worker"], child_env())
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    if run.returncode != 0 or not lines:
        raise RuntimeError(f"the import worker exited {run.returncode}: {last_line(run.stderr)}")
    return json.loads(lines[-1])


def import_times(repeats: int) -> dict[str, Any]:
    """Cumulative ``-X importtime`` (seconds) of a few modules while importing modeling_opt."""
    from bench_cli import child_env
    from bench_util import last_line, run_child

    statement = "import transformers.models.opt.modeling_opt"
    argv = [sys.executable, "-X", "importtime", "-c", statement]
    found: dict[str, list[float]] = {name: [] for name in IMPORTTIME_MODULES}
    for _ in range(repeats):
        run = run_child(argv, child_env())
        if run.returncode != 0:
            raise RuntimeError(f"{statement} exited {run.returncode}: {last_line(run.stderr)}")
        for match in IMPORTTIME_LINE.finditer(run.stderr):
            name = match.group(4)
            if name in found:
                found[name].append(int(match.group(2)) / 1e6)
    return {"statement": statement, "repeats": repeats, "cumulative": found}


def imports_section(importtime_repeats: int) -> dict[str, Any]:
    result = import_chain()
    result["importtime"] = import_times(importtime_repeats) if importtime_repeats else None
    return result


def median_or_none(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


if __name__ == "__main__" and sys.argv[1:] == ["--worker"]:
    print(json.dumps(worker()))
