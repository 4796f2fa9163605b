"""optinspect against a bare forward and its peers: the generated blocks of BENCHMARKS.md.

    .venv/bin/python benchmarks/run.py                        # every section, about 20 minutes
    .venv/bin/python benchmarks/run.py --only overhead,serve  # those blocks of BENCHMARKS.md
    .venv/bin/python benchmarks/run.py --repeats 3 --skip peers  # fewer rounds, said in the file
    .venv/bin/python benchmarks/run.py --quick --output /tmp/B.md  # a smoke test
    python3 benchmarks/run.py --only cuda --repeats 3 --json cuda.json  # opt-1.3b shape, JSON

Each section returns rows of (figure, value, goal, how measured); they are written as a
table between the ``<!-- generated: NAME -->`` markers of the file, and the prose around
them is left alone. Peers (nnsight, TransformerLens) come from benchmarks/requirements.txt;
one that is missing or fails is reported, never fatal. Nothing is downloaded: every
model has random weights.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_report
import bench_util
from bench_report import Row, Section

TITLES = {
    "machine": "Machine and versions",
    "goals": "Goals",
    "overhead": "1. Hook overhead",
    "peers": "2. Peers",
    "memory": "2.1 Peak memory of one call",
    "startup": "3. Start-up and configuration-only work",
    "loads": "3.1 A local load",
    "imports": "3.2 What a local load imports",
    "batch": "4. Batch throughput",
    "e2e": "5. End to end",
    "serve": "6. Model server",
    "calibrate": "7. Calibrate",
    "stream": "8. Streaming memory",
    "cuda": "9. CUDA",
    "report": "10. Report",
}
SECTIONS = list(TITLES)[2:]
SERVE_COMMANDS = ("trace", "lens", "attention")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    def names(text: str) -> list[str]:
        if unknown := [n for n in text.split(",") if n not in SECTIONS]:
            raise argparse.ArgumentTypeError(f"{unknown[0]}: use {','.join(SECTIONS)}")
        return text.split(",")

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--quick", action="store_true", help="small sizes, 1-2 rounds, no peers")
    add("--output", type=Path, help="the file to rewrite (default BENCHMARKS.md; none if --quick)")
    add("--only", type=names, metavar="A,B", help="these sections: " + ",".join(SECTIONS))
    add("--skip", type=names, default=[], metavar="A,B", help="leave these sections out")
    add("--repeats", type=int, help="timed rounds of every measurement (said in the file)")
    add("--threads", type=int, help="torch's intra-op threads (default: torch's)")
    add("--wait-load", type=float, metavar="L", help="wait for the 1-minute load to fall to L")
    add("--json", type=Path, metavar="PATH", help="also write each section as JSON to PATH")
    add("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: rehearse section cuda")
    add("--tokens", type=int, default=256, help="tokens of the cuda section's input")
    add("--worker", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def plan(args: argparse.Namespace) -> dict[str, Any]:
    """Sizes and timed rounds; the full run is sized for about 20 minutes on 2 cores."""

    def n(full: int, quick: int = 1) -> int:
        return args.repeats or (quick if args.quick else full)

    quick, tokens, w = args.quick, [10, 32] if args.quick else [10, 256], int(not args.quick)
    return {
        "shape": "small" if quick else "opt-125m",
        # The goals sit a few percent from run-to-run noise on a shared 2-core host:
        # 9 rounds gave 1.09x-1.17x for the same code at 10 tokens, so 21.
        "overhead": (tokens, n(21, 2), [None] if quick else [None, 1]),
        "peers": (tokens, n(5)),
        "memory": 32 if quick else 256,
        "startup": (n(9), n(5), w),
        "loads": (n(5), w),
        "imports": (n(3),),
        "batch": (8, 4, n(1)) if quick else (64, 8, n(4)),
        "e2e": (n(5), w),
        "serve": (n(20, 3), w, n(5)),
        "calibrate": (8, 16, (8, 32), n(1)) if quick else (16, 128, (16, 128), n(3)),
        "stream": ((10, 40), (2, 4)) if quick else ((500, 5000), (8, 80)),
        "cuda": (n(7, 2), 1),
        "report": (n(5),),
    }


class Bench:
    """One run: the plan, the model built once, a checkpoint of it saved when first needed."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.plan = args, plan(args)
        self.work = Path(tempfile.mkdtemp(prefix="optinspect-bench-"))

    @functools.cached_property
    def model(self) -> Any:
        return bench_util.build_model(self.plan["shape"])

    @functools.cached_property
    def tokenizer(self) -> Any:
        return bench_util.tiny_tokenizer()

    @functools.cached_property
    def checkpoint(self) -> str:
        return str(bench_util.save_checkpoint(self.model, self.work / "model"))

    def section(self, name: str) -> Section:
        import bench_cuda
        import bench_inproc as ip
        import bench_procs as pr
        import bench_serve

        p, args = self.plan, self.args
        if name == "serve":
            label = "opt-125m shape, random weights, saved to a temp folder"
            models = [("tiny", "tiny", "none", SERVE_COMMANDS[: 1 if args.quick else 3])]
            if not args.quick:
                models += [(label, self.checkpoint, "none", SERVE_COMMANDS)]
                models += [("tiny", "tiny", "8bit", SERVE_COMMANDS[:1])]
            return bench_serve.serve(models, p["serve"])
        if name == "memory":
            found = [t for t in ip.PEERS if not args.quick and importlib.util.find_spec(t)]
            return ip.memory(p["shape"], p["memory"], ["bare", "optinspect", "naive", *found])
        if name == "calibrate":
            samples, tokens, _, repeats = p["calibrate"]
            row = ip.calibrate_overhead(self.model, self.tokenizer, samples, tokens, repeats)
            return Section(name, [row, *pr.calibrate_cli(self.checkpoint, *p[name][:3], self.work)])
        if name == "stream":
            rows = pr.stream_rss("tiny", p[name][0], self.work, False)
            return Section(name, rows + pr.stream_rss(self.checkpoint, p[name][1], self.work, True))
        if name == "report":
            import bench_onepass

            return bench_onepass.report(self.model, p["shape"], self.tokenizer, *p[name])
        if name == "cuda":
            return bench_cuda.cuda(*p["cuda"], args.quick, args.tokens, args.device)
        if name == "overhead":
            return ip.overhead(self.model, *p[name])
        if name in ("peers", "batch"):
            fn = ip.peers if name == "peers" else ip.batch_throughput
            return fn(self.model, self.tokenizer, *p[name])
        fns = {"startup": pr.startup, "loads": pr.local_loads, "imports": pr.imports}
        return (fns.get(name) or pr.end_to_end)(*p[name])


def command_line(argv: list[str]) -> str:
    return "`" + " ".join(["python benchmarks/run.py", *argv]) + "`"


def run_section(bench: Bench, name: str, argv: list[str]) -> Section:
    """One section; an unexpected failure becomes its one row, not a crash."""
    limit = bench.args.wait_load
    waited = bench_util.wait_for_load(limit) if limit is not None else 0
    load, start = bench_util.load_1min(), time.perf_counter()
    print(f"[benchmarks] {name} ... (load {load:.2f})", file=sys.stderr, flush=True)
    try:
        section = bench.section(name)
    except Exception as e:
        traceback.print_exc()
        failed = f"`{type(e).__name__}: {bench_util.last_line(str(e))}`"
        section = Section(name, [Row("this section failed", failed)], {"error": failed})
    spent = time.perf_counter() - start
    wait = f" (after waiting {waited:.0f} s for it to fall)" if waited else ""
    section.note = (
        f"_Measured on {time.strftime('%Y-%m-%d %H:%M %Z')} by {command_line(argv)} in "
        f"{bench_util.fmt_seconds(spent)}; 1-minute load {load:.2f}{wait} to "
        f"{bench_util.load_1min():.2f}._"
    )
    if bench.args.quick:
        section.note += " **Quick mode: these figures mean little.**"
    elif bench.args.repeats:
        section.note += f" **Reduced: {bench.args.repeats} timed rounds per measurement.**"
    print(f"[benchmarks] {name} done in {spent:.0f} s", file=sys.stderr, flush=True)
    return section


def machine(threads: int, load_start: float, note: str) -> Section:
    facts = {**bench_util.machine_facts(), "torch threads": str(threads)}
    facts["1-minute load, start / end"] = f"{load_start:.2f} / {bench_util.load_1min():.2f}"
    facts["python"] = f"{sys.implementation.name} {sys.version.split()[0]}"
    rows = [Row(k, v, "`/proc`, `os`, `torch.get_num_threads()`") for k, v in facts.items()]
    dists = ("torch", "transformers", "optinspect", "bitsandbytes", "triton", "nnsight")
    for dist in (*dists, "transformer_lens"):
        rows.append(Row(dist, bench_util.version_of(dist), "`importlib.metadata.version`"))
    return Section("machine", rows, note=note)


def as_json(value: Any) -> Any:
    """``json.dumps``'s fallback: dataclasses (a timing ``Series``, a ``Row``) as their fields."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)


def worker(spec: str) -> int:
    """A measurement that needs a fresh process: ``imports`` or ``memory:TOOL:SHAPE:TOKENS``."""
    import bench_inproc
    import bench_procs

    kind, *rest = spec.split(":")
    if kind == "imports":
        print(json.dumps(bench_procs.imports_worker()))
    else:
        print(json.dumps(bench_inproc.memory_worker(rest[0], rest[1], int(rest[2]))))
    return 0


def write(path: Path, sections: list[Section], argv: list[str], start: float, load: float) -> None:
    """Put the sections' blocks, the machine's and a header into ``path``; the rest stays."""
    import torch

    when = f"{command_line(argv)} on {time.strftime('%Y-%m-%d %H:%M %Z')}"
    blocks = {s.name: bench_report.render_section(s) for s in sections}
    facts = machine(torch.get_num_threads(), load, f"_Recorded by {when}._")
    blocks["machine"] = bench_report.render_section(facts)
    rounds = parse_args(argv).repeats
    reduced = f" with **{rounds} timed rounds per measurement**" if rounds else ""
    spent, names = bench_util.fmt_seconds(time.perf_counter() - start), [s.name for s in sections]
    blocks["header"] = (
        f"Last written by {when}{reduced}, after {spent}: {', '.join(names)}. Each block says "
        "when and how it was measured; the blocks that run did not measure keep their earlier "
        "figures and date.\n"
    )
    old = path.read_text(encoding="utf-8") if path.exists() else bench_report.template(TITLES)
    path.write_text(bench_report.rewrite(old, blocks, TITLES), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    os.environ |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        return worker(args.worker)
    skip = [*args.skip, *(["peers"] if args.quick and not args.only else [])]
    names = [n for n in args.only or SECTIONS if n not in skip]
    if "cuda" in names and args.device == "cuda" and not torch.cuda.is_available():
        if names == ["cuda"]:
            print("[benchmarks] --only cuda: CUDA is not available here", file=sys.stderr)
            return 1
        names.remove("cuda")  # its block keeps what a CUDA machine last wrote there
    output = args.output
    if output is None and not args.quick and names != ["cuda"]:
        output = bench_util.REPO / "BENCHMARKS.md"
    bench, sections = Bench(args), []
    started, load_start = time.perf_counter(), bench_util.load_1min()
    try:
        for name in names:  # written after each section: a run cut short keeps what it measured
            sections.append(run_section(bench, name, argv))
            if output is not None:
                write(output, sections, argv, started, load_start)
    finally:
        shutil.rmtree(bench.work, ignore_errors=True)
    data = {s.name: s.rows if s.data is None else s.data for s in sections}
    text = json.dumps(data, indent=2, default=as_json)
    if args.json is not None:
        args.json.write_text(text + "\n", encoding="utf-8")
    print(text if names == ["cuda"] else "\n".join(map(bench_report.render_section, sections)))
    if output is not None:
        print(f"[benchmarks] wrote {output}", file=sys.stderr)
    return int(any(isinstance(s.data, dict) and "error" in s.data for s in sections))


if __name__ == "__main__":
    sys.exit(main())
