"""optinspect against a bare forward and its peers, written to BENCHMARKS.md.

    .venv/bin/python benchmarks/run.py                 # the full run, about 10-15 minutes
    .venv/bin/python benchmarks/run.py --quick --output /tmp/B.md   # a smoke test, < 1 minute
    .venv/bin/python benchmarks/run.py --only overhead   # section 1 alone, printed (a few minutes)
    .venv/bin/python benchmarks/run.py --only serve --merge   # section 8, into BENCHMARKS.md
    python3 benchmarks/run.py --only cuda --repeats 3 --json cuda.json   # section 7, opt-1.3b shape

Peers (nnsight, TransformerLens) come from benchmarks/requirements.txt; a peer
that is not installed or fails is reported with its error, never fatal. Nothing
is downloaded: every model has random weights, built from a config in memory.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_util

SHAPES = {"125m": "OPT_125M", "small": "OPT_SMALL"}
SERVE_COMMANDS = ("trace", "lens", "attention")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats, small sizes, no peers")
    parser.add_argument(
        "--output", type=Path, help="markdown file (default: BENCHMARKS.md for a full run)"
    )
    parser.add_argument("--repeats", type=int, help="timed repeats per measurement")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--skip-peers", action="store_true", help="leave nnsight and TL out")
    parser.add_argument(
        "--only",
        choices=["cuda", "overhead", "startup", "serve"],
        help="run only this section and print it; BENCHMARKS.md is left alone unless --output "
        "names it or --merge is given (cuda: JSON, exits 1 without CUDA; startup: sections 3 "
        "and 4; serve: section 8)",
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="with --only: replace those sections (and their goals) in BENCHMARKS.md, or in "
        "--output, keeping every other section as it is",
    )
    parser.add_argument(
        "--wait-load",
        type=float,
        metavar="LOAD",
        help="before each section, wait (up to 10 minutes) until the 1-minute load average "
        "is at most LOAD",
    )
    parser.add_argument(
        "--json",
        type=Path,
        metavar="PATH",
        help="with --only cuda: also write the section's JSON to PATH",
    )
    parser.add_argument(
        "--device",
        default="cuda",
        choices=["cuda", "cpu"],
        help="with --only cuda: where the section runs; cpu rehearses its code without a GPU "
        "(no figure of it means anything)",
    )
    parser.add_argument("--worker-memory", help=argparse.SUPPRESS)
    parser.add_argument("--tokens", type=int, default=256, help=argparse.SUPPRESS)
    parser.add_argument("--shape", default="125m", choices=SHAPES, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def plan(args: argparse.Namespace) -> dict[str, Any]:
    """Sizes and repeat counts; the full run is sized to finish in about 15 minutes on 2 cores."""
    if args.quick:
        r = args.repeats or 2
        return {
            "shape": "small",
            "tokens": [10, 32],
            "overhead": (r, 1),
            "overhead_1thread": False,
            "peers": None,
            "memory": None,
            "startup": (1, 0),
            "loads": None,
            "imports": 0,
            "config": (1, 0),
            "serve": {"models": [("tiny", "none", ("trace",))], "calls": (3, 0, 1)},
            "batch": {"count": 8, "tokens": 20, "batch": 4, "repeats": 1, "warmup": 0},
            "e2e": (1, 0),
            "cuda": (2, 1),
        }
    r = args.repeats or 9
    return {
        "shape": "125m",
        "tokens": [10, 256],
        # The goals sit a few percent from run-to-run noise on a shared 2-core host:
        # 9 rounds gave 1.09x-1.17x for the same code at 10 tokens, so at least 21.
        "overhead": (max(r, 21), 1),
        "overhead_1thread": True,
        "peers": None if args.skip_peers else (max(3, r - 4), 1),
        "memory": 256,
        "startup": (r, 1),
        "loads": (["none", "8bit"], max(3, r - 4), 1),
        "imports": 3,
        "config": (max(3, r - 4), 1),
        "serve": {
            # (model, quant, commands); calls: (through the server, warm-up, local loads)
            "models": [
                ("tiny", "none", SERVE_COMMANDS),
                ("125m", "none", SERVE_COMMANDS),
                ("tiny", "8bit", ("trace",)),
            ],
            "calls": (20, 1, max(3, r - 4)),
        },
        "batch": {"count": 64, "tokens": 20, "batch": 8, "repeats": max(3, r - 5), "warmup": 1},
        "e2e": (max(3, r - 4), 1),
        "cuda": (max(3, r - 2), 1),
    }


def shape_of(name: str) -> dict[str, int]:
    import bench_models

    return getattr(bench_models, SHAPES[name])


def section(results: dict[str, Any], key: str, fn: Any, *fn_args: Any) -> None:
    """Run one section; an unexpected failure becomes that section's text, not a crash."""
    if results.get("wait_load") is not None:
        waited = bench_util.wait_for_load(results["wait_load"])
        if waited:
            results.setdefault("waited", {})[key] = waited
    load = bench_util.load_1min()
    start = time.perf_counter()
    print(f"[benchmarks] {key} ... (load {load})", file=sys.stderr, flush=True)
    try:
        results[key] = fn(*fn_args)
    except Exception as e:
        traceback.print_exc()
        results[key] = {"error": f"{type(e).__name__}: {bench_util.last_line(str(e))}"}
    spent = time.perf_counter() - start
    results.setdefault("durations", {})[key] = spent
    results.setdefault("section_load", {})[key] = (load, bench_util.load_1min())
    print(f"[benchmarks] {key} done in {spent:.0f} s", file=sys.stderr, flush=True)


def memory_children(shape: str, tokens: int, threads: int | None, tools: list[str]) -> list[dict]:
    """Each tool's peak memory for one call, each in a fresh process."""
    env = dict(os.environ)
    # Fixed (not adaptive) mmap threshold: freed tensors return to the OS, so RSS
    # tracks live memory and the peak of one call is not hidden by reused heap.
    env.update({"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "131072"})
    env.setdefault("HF_HUB_OFFLINE", "1")
    rows = []
    for tool in tools:
        argv = [sys.executable, __file__, "--worker-memory", tool, "--shape", shape]
        argv += ["--tokens", str(tokens)]
        if threads:
            argv += ["--threads", str(threads)]
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            message = bench_util.last_line(proc.stderr)
            rows.append({"tool": tool, "error": f"exit {proc.returncode}: {message}"})
        else:
            rows.append(json.loads(lines[-1]))
    return rows


def overhead_sections(results: dict[str, Any], model: Any, p: dict[str, Any]) -> None:
    """Section 1 at the default thread count and, in a full run, at 1 thread."""
    import bench_inproc

    results["stats_path"] = bench_inproc.statistics_path()
    section(results, "overhead", bench_inproc.hook_overhead, model, p["tokens"], *p["overhead"])
    if p["overhead_1thread"] and results["threads"] > 1:
        fn = bench_inproc.hook_overhead
        section(results, "overhead_1thread", fn, model, p["tokens"], *p["overhead"], 1)


def startup_sections(results: dict[str, Any], p: dict[str, Any]) -> None:
    """Sections 3 (start-up, a local load, its imports) and 4 (configuration only)."""
    import bench_cli
    import bench_imports

    section(results, "startup", bench_cli.startup, *p["startup"])
    if p["loads"] is not None:
        section(results, "loads", bench_cli.local_loads, *p["loads"])
    section(results, "imports", bench_imports.imports_section, p["imports"])
    section(results, "config", bench_cli.config_only, *p["config"])


def serve_sections(results: dict[str, Any], p: dict[str, Any]) -> None:
    """Section 8: the model server against a local load."""
    import bench_serve

    serve = p["serve"]
    section(results, "serve", bench_serve.serve_round_trips, serve["models"], serve["calls"])


def only_overhead(args: argparse.Namespace) -> dict[str, Any]:
    """Section 1 alone, at full size unless --quick."""
    results, p, model = start(args, overhead_1thread=True)
    overhead_sections(results, model, p)
    return results


def only_processes(args: argparse.Namespace) -> dict[str, Any]:
    """Sections measured in child processes alone (--only startup, --only serve)."""
    results, p = begin(args)
    if args.threads:
        results["threads"] = args.threads
    {"startup": startup_sections, "serve": serve_sections}[args.only](results, p)
    return results


def begin(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """The plan and the header of the results, without torch (start() adds the threads)."""
    p = plan(args)
    results: dict[str, Any] = {
        "quick": args.quick,
        "plan": p,
        "threads": "n/a (child processes only)",
        "load_start": bench_util.load_average(),
        "started": time.strftime("%Y-%m-%d %H:%M %Z"),
        "wait_load": args.wait_load,
    }
    return results, p


def start(
    args: argparse.Namespace, *, overhead_1thread: bool | None = None
) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """What every run begins with: threads, the plan, the header of the results, the model."""
    import bench_inproc
    import bench_models
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    results, p = begin(args)
    if overhead_1thread is not None:
        p["overhead_1thread"] = overhead_1thread
    results["threads"] = torch.get_num_threads()
    model = bench_models.build_model(shape_of(p["shape"]))
    results["model"] = {"shape": p["shape"], "params": sum(t.numel() for t in model.parameters())}
    results["modules"] = len(bench_inproc.every_module(model))
    return results, p, model


def run_benchmarks(args: argparse.Namespace) -> dict[str, Any]:
    import bench_cli
    import bench_inproc
    import bench_models
    import torch

    results, p, model = start(args)
    tokenizer = bench_models.tiny_tokenizer()

    overhead_sections(results, model, p)
    if p["peers"] is not None:
        section(results, "peers", bench_inproc.peers, model, tokenizer, p["tokens"], *p["peers"])
    if p["memory"] is not None:
        tools = list(bench_inproc.MEMORY_TOOLS)
        if args.skip_peers:
            tools = [t for t in tools if t not in ("nnsight", "transformer_lens")]
        section(results, "memory", memory_children, p["shape"], p["memory"], args.threads, tools)
    b = p["batch"]
    section(
        results,
        "batch",
        bench_inproc.batch_throughput,
        model,
        tokenizer,
        b["count"],
        b["tokens"],
        b["batch"],
        b["repeats"],
        b["warmup"],
    )
    del model
    startup_sections(results, p)
    section(results, "e2e", bench_cli.end_to_end, *p["e2e"])
    serve_sections(results, p)
    if torch.cuda.is_available():
        import bench_cuda

        section(results, "cuda", bench_cuda.cuda_section, *p["cuda"], args.quick)
    else:
        results["cuda"] = None
    return results


def as_json(value: Any) -> Any:
    """``json.dumps``'s fallback: dataclasses (a timing ``Series``) as their fields."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)


def only_cuda(args: argparse.Namespace) -> int:
    """The CUDA section alone, printed as JSON (and written to --json); 1 without CUDA or
    when the section failed."""
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("[benchmarks] --only cuda: CUDA is not available here", file=sys.stderr)
        return 1
    import bench_cuda

    results: dict[str, Any] = {}
    repeats, warmup = plan(args)["cuda"]
    fn = bench_cuda.cuda_section
    section(results, "cuda", fn, repeats, warmup, args.quick, args.tokens, args.device)
    text = json.dumps(results, indent=2, default=as_json)
    if args.json is not None:
        args.json.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 1 if "error" in results["cuda"] else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if args.worker_memory:
        import bench_inproc
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        result = bench_inproc.memory_worker(args.worker_memory, shape_of(args.shape), args.tokens)
        bench_inproc.print_worker_result(result)
        return 0
    import bench_report

    start = time.perf_counter()
    if args.merge and args.only in (None, "cuda"):
        print("[benchmarks] --merge needs --only overhead, startup or serve", file=sys.stderr)
        return 2
    if args.only == "cuda":
        return only_cuda(args)
    argv = argv if argv is not None else sys.argv[1:]
    if args.only is not None:
        results = only_overhead(args) if args.only == "overhead" else only_processes(args)
        results["load_end"] = bench_util.load_average()
        results["total_s"] = time.perf_counter() - start
        text = bench_report.render_only(args.only, results, argv)
        if args.merge:
            output = args.output or bench_util.REPO / "BENCHMARKS.md"
            old = output.read_text(encoding="utf-8")
            output.write_text(bench_report.merge(old, text, results, argv), encoding="utf-8")
            print(f"[benchmarks] merged into {output}", file=sys.stderr)
        elif args.output is not None:
            args.output.write_text(text, encoding="utf-8")
        print(text)
        return 0
    results = run_benchmarks(args)
    results["load_end"] = bench_util.load_average()
    results["total_s"] = time.perf_counter() - start
    text = bench_report.render(results, argv)
    output = args.output or bench_util.REPO / "BENCHMARKS.md"
    output.write_text(text, encoding="utf-8")
    print(text)
    print(f"[benchmarks] wrote {output} in {results['total_s']:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
