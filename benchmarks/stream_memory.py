#!/usr/bin/env python3
"""Peak RSS of ``optinspect trace - --format jsonl`` over 500 and 5,000 sentences.

    python benchmarks/stream_memory.py            # tiny model, 500 and 5000 sentences
    python benchmarks/stream_memory.py --model facebook/opt-125m --counts 500 5000

Streaming keeps nothing per sentence once its line is written, so peak memory
should not grow with the number of sentences. Each count runs in a fresh
process; its peak RSS comes from the kernel (``RUSAGE_CHILDREN``), which is
reset for every child by running each measurement in its own wrapper process.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from pathlib import Path

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "a",
    "language",
    "model",
    "reads",
    "text",
    "one",
    "token",
    "at",
    "time",
    "and",
    "predicts",
    "next",
    "every",
    "layer",
    "of",
    "decoder",
    "adds",
    "attention",
    "feed",
    "forward",
    "block",
    "to",
    "stream",
]

MEASURE = r"""
import resource, subprocess, sys
with open(sys.argv[1], "rb") as stdin, open(sys.argv[2], "wb") as stdout:
    code = subprocess.run(sys.argv[3:], stdin=stdin, stdout=stdout).returncode
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(code, peak)
"""


def sentences(count: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    lines = (" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 24))) for _ in range(count))
    return "\n".join(lines) + "\n"


def peak_rss_mib(count: int, model: str, workdir: Path) -> tuple[float, int]:
    source = workdir / f"in-{count}.txt"
    source.write_text(sentences(count), encoding="utf-8")
    target = workdir / f"out-{count}.jsonl"
    exe = Path(sys.executable).with_name("optinspect")
    command = [str(exe), "trace", "-", "--model", model, "--format", "jsonl", "--layer", "all"]
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(source), str(target), *command],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if out[0] != "0":
        raise SystemExit(f"optinspect exited {out[0]} for {count} sentences")
    lines = sum(1 for _ in target.open(encoding="utf-8"))
    return int(out[1]) / 1024, lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--counts", type=int, nargs="+", default=[500, 5000])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/optinspect-stream"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    results = {}
    for count in args.counts:
        rss, lines = peak_rss_mib(count, args.model, args.workdir)
        results[count] = rss
        print(f"{count:>6} sentences: {lines} JSONL lines, peak RSS {rss:.1f} MiB", flush=True)
    low, high = results[min(results)], results[max(results)]
    print(json.dumps({"model": args.model, "peak_rss_mib": results, "ratio": high / low}))


if __name__ == "__main__":
    main()
