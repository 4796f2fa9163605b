#!/usr/bin/env python3
"""Peak RSS of ``optinspect trace - --format jsonl`` over 500 and 5,000 sentences, and
of ``trace --save`` over 8 and 80.

    python benchmarks/stream_memory.py            # tiny model, 500 and 5000 sentences
    python benchmarks/stream_memory.py --model facebook/opt-125m --counts 500 5000
    python benchmarks/stream_memory.py --save     # opt-125m shape, --layer all, 8 and 80

Streaming keeps nothing per sentence once its line is written, so peak memory
should not grow with the number of sentences. With ``--save`` every selected output
goes to the file as it comes, so peak memory should not grow with the file either
(before, an opt-125m-shaped model at ``--quant none --layer all`` peaked at 1.16 GB for
3 sentences, a 19 MB file, and 1.52 GB for 80, a 503 MB file). ``--save`` builds a
random-weight checkpoint of opt-125m's shape in the work folder once (about 500 MB).
Each count runs in a fresh process; its peak RSS comes from the kernel
(``RUSAGE_CHILDREN``), which is reset for every child by running each measurement in
its own wrapper process.
"""

from __future__ import annotations

import argparse
import json
import os
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


def sentences(count: int, seed: int = 0, words: tuple[int, int] = (8, 24)) -> str:
    rng = random.Random(seed)
    lines = (" ".join(rng.choice(WORDS) for _ in range(rng.randint(*words))) for _ in range(count))
    return "\n".join(lines) + "\n"


def peak_rss_mib(
    count: int, model: str, workdir: Path, save: Path | None = None
) -> tuple[float, int]:
    source = workdir / f"in-{count}.txt"
    # --save: sentences of one length, so every batch has the same activations and only
    # the file grows with the count.
    words = (16, 16) if save is not None else (8, 24)
    source.write_text(sentences(count, words=words), encoding="utf-8")
    target = workdir / f"out-{count}.jsonl"
    exe = Path(sys.executable).with_name("optinspect")
    command = [str(exe), "trace", "-", "--model", model, "--format", "jsonl", "--layer", "all"]
    if save is not None:
        command += ["--quant", "none", "--save", str(save), "--force", "--no-server"]
    env = dict(os.environ)
    if save is not None:
        # A fixed mmap threshold: freed tensors go back to the system, so the peak RSS is
        # what was alive at once, not what glibc's growing threshold left in the heap
        # (run.py's memory section does the same).
        env.update({"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "131072"})
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(source), str(target), *command],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout.split()
    if out[0] != "0":
        raise SystemExit(f"optinspect exited {out[0]} for {count} sentences")
    lines = sum(1 for _ in target.open(encoding="utf-8"))
    return int(out[1]) / 1024, lines


def shaped_checkpoint(workdir: Path) -> str:
    """A random-weight checkpoint shaped like opt-125m, made once in ``workdir``."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_models

    folder = workdir / "opt-125m-shape"
    if not (folder / "config.json").exists():
        bench_models.save_checkpoint(bench_models.OPT_125M, folder)
    return str(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="default: tiny; with --save, opt-125m's shape")
    parser.add_argument("--counts", type=int, nargs="+", help="default: 500 5000; --save: 8 80")
    parser.add_argument("--save", action="store_true", help="measure trace --save instead")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/optinspect-stream"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    counts = args.counts or ([8, 80] if args.save else [500, 5000])
    model = args.model or (shaped_checkpoint(args.workdir) if args.save else "tiny")
    results, sizes = {}, {}
    for count in counts:
        save = args.workdir / f"save-{count}.safetensors" if args.save else None
        rss, lines = peak_rss_mib(count, model, args.workdir, save)
        results[count] = rss
        line = f"{count:>6} sentences: {lines} JSONL lines, peak RSS {rss:.1f} MiB"
        if save is not None:
            sizes[count] = save.stat().st_size / 2**20
            line += f", --save file {sizes[count]:.1f} MiB"
            save.unlink()
        print(line, flush=True)
    low, high = results[min(results)], results[max(results)]
    summary = {"model": model, "peak_rss_mib": results, "ratio": high / low}
    if sizes:
        summary["save_mib"] = sizes
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
