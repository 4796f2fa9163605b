"""Sections that time whole ``optinspect`` processes: start-up and configuration-only work,
local loads, what a load imports, the end-to-end split, calibrate's ranks and memory,
streaming memory.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_report import Row, Section
from bench_util import (
    DASH,
    LOW_MMAP,
    TIMES,
    ChildRun,
    child_env,
    fmt_mib,
    fmt_ratio,
    fmt_seconds,
    fmt_times,
    last_line,
    optinspect_exe,
    run_child,
    sentences,
)

E2E_TEXT = "The quick brown fox jumps over the lazy dog"
SPAWN = "wall time from spawn to exit, peak RSS from `wait4`"


@dataclass
class Runs:
    """Repeated runs of one command line; ``error`` is the last line of a failed run."""

    argv: list[str]
    runs: list[ChildRun] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def times(self) -> list[float]:
        return [r.seconds for r in self.runs]

    def value(self, rss: bool = True) -> str:
        if not self.runs:
            return f"failed: `{self.error}`"
        peak = statistics.median(r.rss_mib for r in self.runs)
        return fmt_times(self.times) + (f"; peak RSS {fmt_mib(peak)}" if rss else "")


def measure(
    commands: dict[str, list[str]],
    repeats: int,
    warmup: int = 1,
    baseline: str = "",
    env: dict[str, str] | None = None,
) -> dict[str, Runs]:
    """Run each command line ``repeats`` times round-robin after ``warmup`` rounds; a ratio
    pairs each run with ``baseline``'s run of the same round."""
    results = {label: Runs(argv) for label, argv in commands.items()}
    for index in range(warmup + repeats):
        spent: dict[str, float] = {}
        for label, result in results.items():
            if result.error is None:
                run = run_child(result.argv, env)
                if run.returncode != 0:
                    result.error = f"exit {run.returncode}: {last_line(run.stderr or run.stdout)}"
                elif index >= warmup:
                    result.runs.append(run)
                    spent[label] = run.seconds
        if baseline in spent:
            for label, seconds in spent.items():
                results[label].ratios.append(seconds / spent[baseline])
    return results


def timed_rows(runs: dict[str, Runs], how: str = "") -> list[Row]:
    count = max(len(r.runs) for r in runs.values())
    how = f"median (min{DASH}max) of {count} round-robin runs, each a fresh process; {SPAWN}{how}"
    return [Row(f"`{label}`", r.value(), how=how) for label, r in runs.items()]


def startup(repeats: int, config_repeats: int, warmup: int) -> Section:
    """``optinspect --help`` against ``import torch``, and configuration-only commands."""
    exe, torch = optinspect_exe(), 'python -c "import torch"'
    commands = {"optinspect --help": [exe, "--help"], torch: [sys.executable, "-c", "import torch"]}
    runs = measure(commands, repeats, warmup, baseline=torch)
    rows = timed_rows(runs, "; the ratio paired with `import torch` of the same round")
    help_run = runs["optinspect --help"]
    seconds, ratio = statistics.median(help_run.times), statistics.median(help_run.ratios)
    value = f"{rows[0].value}; {fmt_ratio(help_run.ratios)} `import torch`"
    goal = "< 0.3 s and < 1/5 of `import torch`"
    rows[0] = Row(rows[0].figure, value, rows[0].how, goal, seconds < 0.3 and ratio < 0.2)
    config = ["params", "tree", "trace --dry-run --tokens 16 --layer 0"]
    args = {c: [c.split()[0], "--model", "facebook/opt-175b", *c.split()[1:]] for c in config}
    commands = {"optinspect " + " ".join(a): [exe, *a] for a in args.values()}
    runs = measure(commands, config_repeats, warmup)
    rows += timed_rows(runs, "; the config is built in: no weights are read or allocated")
    return Section("startup", rows)


def local_loads(repeats: int, warmup: int) -> Section:
    """A fresh process that loads the tiny model here (no server) and traces one word."""
    commands = {}
    for quant in ("none", "8bit"):
        args = f"--model tiny --quant {quant} --format json --no-server"
        commands[f'optinspect trace "Hello" {args}'] = [
            optinspect_exe(),
            "trace",
            "Hello",
            *args.split(),
        ]
    rows = timed_rows(
        measure(commands, repeats, warmup),
        "; imports torch and transformers, loads the built-in tiny model",
    )
    return Section("loads", rows)


def end_to_end(repeats: int, warmup: int) -> Section:
    """``trace --timings`` on the tiny model: wall time outside, and the program's own split."""
    label = f'optinspect trace "{E2E_TEXT}" --model tiny --layer 0 --timings'
    argv = [optinspect_exe(), "trace", E2E_TEXT, *["--model", "tiny", "--layer", "0", "--timings"]]
    result = measure({label: argv}, repeats, warmup)[label]
    parts: dict[str, list[float]] = {}
    for run in result.runs:
        found = dict(re.findall(r"(import|load|forward|render|total) ([\d.]+)s", run.stderr))
        for key, value in found.items():
            parts.setdefault(key, []).append(float(value))
        if "total" in found:  # the interpreter's start and exit: what the total leaves out
            parts.setdefault("outside total", []).append(run.seconds - float(found["total"]))
    how = f"median (min{DASH}max) of {len(result.runs)} runs of `{label}`"
    rows = [Row("wall time, measured outside", result.value(), how=f"{how}; {SPAWN}")]
    for key in ("import", "load", "forward", "render", "total", "outside total"):
        said = "the wall time less the total" if key == "outside total" else "from `--timings`"
        rows.append(Row(key, fmt_times(parts.get(key, [])), how=f"{how}; {said}"))
    return Section("e2e", rows)


# -- what a local load imports ---------------------------------------------------------------
TARGET = "torch._dynamo"
WORKER_ARGS = [
    "trace",
    "Hello",
    "--model",
    "tiny",
    "--quant",
    "none",
    "--format",
    "json",
    "--no-server",
]
#: The modules the issue about start-up names as importers of torch._dynamo.
NAMED_IN_ISSUE = ("transformers.masking_utils", "transformers.integrations.deepgemm")
NAMED_IN_ISSUE += ("transformers.generation.continuous_batching.cache",)
IMPORTTIME = ("torch", "transformers", "transformers.masking_utils", TARGET)
IMPORTTIME += ("transformers.models.opt.modeling_opt",)
LAZY_MODULE = "transformers/utils/import_utils.py"  # its frames sit between the two ends


def short_path(filename: str) -> str | None:
    """``optinspect/...``, ``transformers/...`` or ``torch/...``; None for other code."""
    for marker in ("/site-packages/", "/src/"):
        rest = filename.split(marker, 1)[-1]
        if marker in filename and rest.startswith(("optinspect/", "transformers/", "torch/")):
            return rest
    return None


def frames(stack: list[traceback.FrameSummary]) -> list[tuple[str, str]]:
    """(file:line, code) of the frames of optinspect, transformers and torch, outermost first."""
    return [(f"{p}:{f.lineno}", f.line or "") for f in stack if (p := short_path(f.filename))]


def dynamo_lines(path: str) -> tuple[list[int], list[int]]:
    """Lines of ``path`` naming torch._dynamo: run at import, and inside functions."""
    found: tuple[set[int], set[int]] = (set(), set())

    def names_target(node: ast.AST) -> bool:
        if isinstance(node, ast.Import):
            return any(a.name.startswith(TARGET) for a in node.names)
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "torch":
                return any(a.name == "_dynamo" for a in node.names)
            return node.module.startswith(TARGET)
        value = getattr(node, "value", None)
        dotted = isinstance(node, ast.Attribute) and node.attr == "_dynamo"
        return dotted and isinstance(value, ast.Name) and value.id == "torch"

    def visit(node: ast.AST, deferred: bool) -> None:
        if names_target(node):
            found[deferred].add(node.lineno)
        body: Any = getattr(node, "body", [])
        function = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        body = (body if isinstance(body, list) else [body]) if function else []
        for child in ast.iter_child_nodes(node):  # decorators and defaults run at definition
            visit(child, deferred or child in body)

    visit(ast.parse(Path(path).read_text(encoding="utf-8")), False)
    return sorted(found[0]), sorted(found[1])


def imports_worker() -> dict[str, Any]:
    """Run the trace in-process under a finder that records who first looked for what."""
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
        filename = getattr(module, "__file__", None) or ""
        if name.startswith("transformers") and filename.endswith(".py"):
            at_import, in_functions = dynamo_lines(filename)
            if at_import or in_functions or name in NAMED_IN_ISSUE:
                chain = [f for f, _ in frames(first.get(name, [])) if LAZY_MODULE not in f]
                by = chain[-1] if chain else None
                importers.append([short_path(filename), by, at_import, in_functions, name])
    chain = frames(first.get(TARGET, []))
    return {"exit": code, "bnb": "bitsandbytes" in sys.modules, "chain": chain, "by": importers}


def imports(repeats: int) -> Section:
    """Who imports ``torch._dynamo`` in a local load, and what ``-X importtime`` says it costs."""
    worker = [sys.executable, str(Path(__file__).parent / "run.py"), "--worker", "imports"]
    run = run_child(worker, child_env())
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    if run.returncode != 0 or not lines:
        raise RuntimeError(f"the import worker exited {run.returncode}: {last_line(run.stderr)}")
    found, label = json.loads(lines[-1]), "`optinspect " + " ".join(WORKER_ARGS) + "`"
    how = f"{label} in a fresh process, under a `sys.meta_path` finder that records who first "
    rows = [Row("exit status of that command", str(found["exit"]), how + "looks for a module")]
    for i, (where, code) in enumerate(found["chain"], 1):
        figure = f"`{TARGET}` first imported: frame {i}, outermost first"
        rows.append(Row(figure, f"`{where}`", f"`{code}`"))
    for module, by, at_import, in_functions, name in found["by"]:
        lines = [", ".join(map(str, at)) or DASH for at in (at_import, in_functions)]
        value = f"imported by `{by}`; lines run at import: {lines[0]}; in functions: {lines[1]}"
        named = " (named in the issue)" if name in NAMED_IN_ISSUE else ""
        rows.append(Row(f"`{module}` names `{TARGET}`{named}", value, "a scan of its source"))
    statement = "import transformers.models.opt.modeling_opt"
    took: dict[str, list[float]] = {name: [] for name in IMPORTTIME}
    for _ in range(repeats):
        run = run_child([sys.executable, "-X", "importtime", "-c", statement], child_env())
        for us, name in re.findall(r"import time:\s+\d+ \|\s+(\d+) \| *(\S+)", run.stderr):
            took.setdefault(name, []).append(int(us) / 1e6)
    how = f'`python -X importtime -c "{statement}"`, median of {repeats}: cumulative time'
    for name in (m for m in IMPORTTIME if took[m]):
        rows.append(
            Row(f"import time of `{name}`", fmt_seconds(statistics.median(took[name])), how)
        )
    if took[TARGET] and took[IMPORTTIME[-1]]:
        share = statistics.median(took[TARGET]) / statistics.median(took[IMPORTTIME[-1]])
        rows.append(Row(f"`{TARGET}`'s share of that import", f"{share:.0%}", how))
    bnb = found["bnb"]
    figure = "`'bitsandbytes' in sys.modules` after `--quant none`"
    rows.append(Row(figure, str(bnb), label, "False", not bnb))
    return Section("imports", rows)


# -- calibrate: ranks and memory; streaming memory ----------------------------------------------
def calibrate_cli(folder: str, samples: int, tokens: int, rss: tuple, work: Path) -> list[Row]:
    """``optinspect calibrate`` as one process against 2 gloo ranks, and its peak RSS at two
    sample counts (each a fresh process)."""

    def argv(count: int, ranks: int) -> list[str]:
        data = work / f"corpus-{count}.txt"
        data.write_text("\n".join(sentences(count, (tokens, tokens))) + "\n", encoding="utf-8")
        launch = f"-m torch.distributed.run --nproc-per-node {ranks} " if ranks > 1 else ""
        args = f"-m optinspect calibrate --file {data} --model {folder} --seq-len {tokens} "
        args += "--batch-size 8 --device cpu -f json --no-server"
        return [sys.executable, *(launch + args).split()]

    env = child_env(OMP_NUM_THREADS="1")  # torchrun's default per rank; the same for 1
    one, two = (measure({"": argv(samples, n)}, 1, 0, env=env)[""] for n in (1, 2))
    value = f"1 process {one.value(False)}, 2 ranks {two.value(False)}"
    if one.runs and two.runs:
        value += f": speed-up {one.times[0] / two.times[0]:.2f}{TIMES}"
    how = f"{samples} samples of {tokens} tokens, batch 8, `OMP_NUM_THREADS=1`; one run each"
    rows = [Row("`optinspect calibrate`: 1 process against 2 ranks (gloo)", value, how=how)]
    small, large = (measure({"": argv(n, 1)}, 1, 0)[""] for n in rss)
    if small.runs and large.runs:
        a, b = small.runs[0].rss_mib, large.runs[0].rss_mib
        value = f"{rss[0]} samples {fmt_mib(a)}, {rss[1]} samples {fmt_mib(b)}: {b / a - 1:+.1%}"
    else:
        value = f"failed: `{small.error or large.error}`"
    how = f"one process each, {tokens} tokens a sample; {SPAWN}"
    rows.append(Row("`optinspect calibrate`: peak RSS against the samples", value, how=how))
    return rows


def stream_rss(model: str, counts: tuple[int, int], work: Path, save: bool) -> list[Row]:
    """Peak RSS of ``trace - --format jsonl --layer all`` at two sentence counts; with ``save``,
    of ``trace --save`` (every output to the file as it comes)."""
    rows, peaks = [], []
    what = "`trace - --format jsonl --layer all" + (" --quant none --save FILE`" if save else "`")
    env = child_env(**LOW_MMAP if save else {})  # with --save, the peak is what was alive
    for count in counts:
        source, target = work / f"in-{count}.txt", work / f"save-{count}.safetensors"
        # --save: sentences of one length, so only the file grows with the count.
        source.write_text("\n".join(sentences(count, (16, 16) if save else (8, 24))) + "\n")
        args = f"trace - --model {model} --format jsonl --layer all --no-server"
        args += f" --quant none --save {target} --force" if save else ""
        with source.open("rb") as stdin:
            run = run_child([optinspect_exe(), *args.split()], env, stdin)
        value = f"failed: `exit {run.returncode}: {last_line(run.stderr)}`"
        if run.returncode == 0:
            peaks.append(run.rss_mib)
            value = f"peak RSS {fmt_mib(run.rss_mib)}; {run.stdout.count(chr(10))} JSONL lines"
        if run.returncode == 0 and save:
            value += f"; file {target.stat().st_size / 2**20:.1f} MiB"
            target.unlink()
        rows.append(Row(f"{what}, {count} sentences", value, f"sentences on stdin; {SPAWN}"))
    if len(peaks) == 2:
        figure = f"{what}: peak RSS, {counts[1]} against {counts[0]} sentences"
        rows.append(Row(figure, f"{peaks[1] / peaks[0]:.2f}{TIMES}", "the ratio of the peaks"))
    return rows
