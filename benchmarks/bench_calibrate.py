"""Calibrate against bare forwards, 2 ranks against 1, and peak RSS against sample count.

    python benchmarks/bench_calibrate.py [--samples 64] [--tokens 256] [--skip-ranks] [--skip-rss]

A random-weight model shaped like opt-125m (saved once under a temporary folder),
samples of exactly ``--tokens`` tokens, batch 8, on the CPU. Prints the figures;
no assertion: timings on a shared machine are reported, not tested.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
sys.path.insert(0, str(SRC))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def make_model(folder: Path) -> Path:
    """An opt-125m-shaped checkpoint with random weights and the tiny tokenizer."""
    import shutil

    import torch
    from transformers import OPTConfig, OPTForCausalLM

    from optinspect.model.spec import tiny_path

    if (folder / "config.json").exists():
        return folder
    torch.manual_seed(0)
    config = OPTConfig(
        hidden_size=768,
        num_hidden_layers=12,
        ffn_dim=3072,
        num_attention_heads=12,
        max_position_embeddings=2048,
        word_embed_proj_dim=768,
        vocab_size=50272,
    )
    OPTForCausalLM(config).save_pretrained(folder)
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(tiny_path() / name, folder / name)
    return folder


def corpus(path: Path, samples: int, tokens: int) -> Path:
    """Lines long enough to give ``tokens`` tokens each after --seq-len cuts them."""
    words = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "a",
        "lazy",
        "dog",
        "while",
        "calibration",
        "runs",
    ]
    with path.open("w") as f:
        for i in range(samples):
            f.write(" ".join(words[(i + j) % len(words)] for j in range(tokens * 2)) + "\n")
    return path


def ids_for(loaded, texts: list[str], tokens: int) -> list[list[int]]:
    from optinspect.engine.samples import tokenize_samples

    return list(tokenize_samples(loaded.tokenizer, texts, seq_len=tokens, max_positions=2048))


def overhead(model: Path, samples: int, tokens: int, repeats: int = 3) -> None:
    import torch

    from optinspect.analyses.calibrate import CalibrationSettings, calibrate
    from optinspect.engine.runner import Runner
    from optinspect.model.loading import load_model

    loaded = load_model(str(model), quant="none", device="cpu")
    texts = corpus(Path(tempfile.mkdtemp()) / "c.txt", samples, tokens).read_text().splitlines()
    ids = ids_for(loaded, texts, tokens)

    def bare() -> None:
        runner = Runner(loaded, batch_size=8)
        for _batch, output in runner.run_batches(runner.token_batches(ids)):
            del output

    def calib() -> None:
        calibrate(loaded, ids, settings=CalibrationSettings(batch_size=8))

    times: dict[str, list[float]] = {"bare": [], "calibrate": []}
    bare()  # warm-up
    for _ in range(repeats):
        for name, fn in (("bare", bare), ("calibrate", calib)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    b, c = min(times["bare"]), min(times["calibrate"])
    print(f"threads {torch.get_num_threads()}; {samples} samples x {tokens} tokens, batch 8")
    print(f"bare forwards {b:.2f} s, calibrate {c:.2f} s, ratio {c / b:.2f}x (best of {repeats})")


def run_cli(model: Path, data: Path, nproc: int) -> tuple[float, int]:
    """Wall time of one CLI run and its peak RSS (KiB, largest child)."""
    args = [
        "-m",
        "optinspect",
        "calibrate",
        "--file",
        str(data),
        "--model",
        str(model),
        "--seq-len",
        "256",
        "--batch-size",
        "8",
        "--device",
        "cpu",
        "-f",
        "json",
    ]
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), *args]
    else:
        cmd = [sys.executable, *args]
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    return wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--skip-ranks", action="store_true")
    parser.add_argument("--skip-rss", action="store_true")
    args = parser.parse_args()
    model = make_model(Path(tempfile.gettempdir()) / "optinspect-bench-opt125m")
    overhead(model, args.samples, args.tokens)
    work = Path(tempfile.mkdtemp())
    if not args.skip_ranks:
        data = corpus(work / "r.txt", args.samples, args.tokens)
        os.environ["OMP_NUM_THREADS"] = "1"  # torchrun's default per rank; the same for 1
        one, _ = run_cli(model, data, 1)
        two, _ = run_cli(model, data, 2)
        del os.environ["OMP_NUM_THREADS"]
        print(f"1 process {one:.1f} s, 2 ranks (gloo) {two:.1f} s, speed-up {one / two:.2f}x")
    if not args.skip_rss:
        # getrusage(CHILDREN) is a running maximum: measure the small run first.
        _, small = run_cli(model, corpus(work / "s.txt", 64, args.tokens), 1)
        _, large = run_cli(model, corpus(work / "l.txt", 1024, args.tokens), 1)
        print(
            f"peak RSS 64 samples {small / 1024:.0f} MiB, 1024 samples {large / 1024:.0f} MiB, "
            f"growth {(large / small - 1) * 100:+.1f}%"
        )


if __name__ == "__main__":
    main()
