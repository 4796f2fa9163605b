"""Timing, child processes, machine facts, number formats and the random-weight models.

Standard library only at import time, so ``run.py --help`` stays instant.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent
TIMES, DASH = "\u00d7", "\u2013"  # escaped here so the source stays ASCII
#: Freed tensors go back to the system, so RSS follows live memory, not glibc's reused heap.
LOW_MMAP = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "131072"}


@dataclass
class Series:
    """Wall times (seconds) of one thing, repeated; ``ratios`` pair each run with a baseline."""

    label: str
    times: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)


def interleave(
    runs: dict[str, Callable[[], object]], repeats: int, warmup: int = 1, baseline: str = ""
) -> dict[str, Series]:
    """Time every callable ``repeats`` times, round-robin, after ``warmup`` untimed rounds.

    Round-robin order means a burst of load on the shared machine hits every variant
    alike; each variant's ratio to ``baseline`` is taken within a round, then summarised.
    """
    for _ in range(warmup):
        for fn in runs.values():
            fn()
    series = {name: Series(name) for name in runs}
    for _ in range(repeats):
        spent = {}
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            spent[name] = time.perf_counter() - start
        for name, seconds in spent.items():
            series[name].times.append(seconds)
            if baseline:
                series[name].ratios.append(seconds / spent[baseline])
    return series


@dataclass
class ChildRun:
    """One subprocess: wall time, its own peak RSS (from wait4), exit code and output."""

    seconds: float
    rss_mib: float
    returncode: int
    stdout: str
    stderr: str


# A small interpreter forks and execs the command: Linux counts the RSS of the process
# that forks into the child's ru_maxrss, so forking from this one (torch loaded) would
# inflate every figure.
_LAUNCHER = r"""
import json, os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    except OSError as e:
        sys.stderr.write(f"cannot run {sys.argv[2]}: {e}\n")
    os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    json.dump([time.perf_counter() - start, usage.ru_maxrss, os.waitstatus_to_exitcode(status)], f)
"""


def child_env(**extra: str) -> dict[str, str]:
    offline = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "200"}
    return {**os.environ, **offline, **extra}


def run_child(
    argv: Sequence[str], env: dict[str, str] | None = None, stdin: IO[bytes] | None = None
) -> ChildRun:
    """Run ``argv`` alone: wall time from fork to exit, and its own peak RSS."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        with tempfile.NamedTemporaryFile(suffix=".json") as facts:
            launcher = [sys.executable, "-S", "-c", _LAUNCHER, facts.name, *argv]
            env = env or child_env()
            subprocess.run(launcher, stdin=stdin, stdout=out, stderr=err, env=env, cwd=REPO)
            seconds, kib, code = json.loads(Path(facts.name).read_text() or "[NaN, 0, -1]")
        out.seek(0)
        err.seek(0)
        text = (out.read().decode(errors="replace"), err.read().decode(errors="replace"))
        return ChildRun(seconds, kib / 1024, code, *text)


def last_line(text: str) -> str:
    """The last ``Error: ...`` line of ``text``, else its last line."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error")]
    return (errors or lines or ["(no output)"])[-1]


def optinspect_exe() -> str:
    """The venv's console script next to this interpreter, else the one on PATH."""
    beside = Path(sys.executable).parent / "optinspect"
    return str(beside) if beside.exists() else "optinspect"


# -- the machine -------------------------------------------------------------------------
def machine_facts() -> dict[str, str]:
    def find(path: str, pattern: str) -> str | None:
        match = re.search(pattern, Path(path).read_text()) if Path(path).exists() else None
        return match.group(1).strip() if match else None

    ram = find("/proc/meminfo", r"MemTotal:\s+(\d+) kB")
    return {
        "CPU": find("/proc/cpuinfo", r"model name\s*:\s*(.+)") or "n/a",
        "logical cores": str(os.cpu_count()),
        "RAM": f"{int(ram) / 1024**2:.1f} GiB" if ram else "n/a",
    }


def load_1min() -> float:
    return os.getloadavg()[0]


def wait_for_load(limit: float, patience: float = 600.0, step: float = 20.0) -> float:
    """Sleep while the 1-minute load average is above ``limit`` (another user's test suite
    on a 2-core machine skews every timing), at most ``patience`` s; the seconds waited."""
    waited = 0.0
    while (load := load_1min()) > limit and waited < patience:
        print(f"[benchmarks] load {load:.2f} > {limit}: waiting", file=sys.stderr, flush=True)
        time.sleep(step)
        waited += step
    return waited


def version_of(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def status_mib(key: str) -> float:
    """``VmRSS`` (resident now) or ``VmHWM`` (the peak) of this process, in MiB."""
    match = re.search(rf"{key}:\s+(\d+) kB", Path("/proc/self/status").read_text())
    return int(match.group(1)) / 1024 if match else 0.0


# -- formats ---------------------------------------------------------------------------------
def fmt_seconds(seconds: float) -> str:
    if seconds >= 10:
        return f"{seconds:.1f} s"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.01 else f"{seconds * 1000:.1f} ms"


def spread(values: Sequence[float], fmt: Callable[[float], str], unit: str = "") -> str:
    """Median (min-max); a dash for no values."""
    if not values:
        return DASH
    median = fmt(statistics.median(values)) + unit
    if len(values) == 1:
        return median
    return f"{median} ({fmt(min(values))}{DASH}{fmt(max(values))})"


def fmt_times(values: Sequence[float]) -> str:
    return spread(values, fmt_seconds)


def fmt_ratio(values: Sequence[float]) -> str:
    return spread(values, lambda x: f"{x:.2f}", TIMES)


def fmt_mib(mib: float) -> str:
    return f"{mib:.0f} MiB"


# -- random-weight models: nothing is downloaded -----------------------------------------------
#: name: (hidden size, layers, heads, vocabulary, positions); the FFN is 4x the hidden size.
SHAPES = {
    "opt-125m": (768, 12, 12, 50272, 2048),
    "opt-1.3b": (2048, 24, 32, 50272, 2048),
    "small": (64, 2, 4, 512, 512),  # for --quick on two cores
}
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")
WORDS = re.findall(
    r"\w+",
    "the model reads every token and each layer adds a little more context to what came before "
    "so that by the last layer a word knows its neighbours quite well while the attention heads "
    "look back over the sentence and the feed forward blocks widen then narrow the hidden state",
)


def opt_config(shape: str) -> Any:
    from transformers import OPTConfig

    hidden, layers, heads, vocab, positions = SHAPES[shape]
    return OPTConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        ffn_dim=4 * hidden,
        num_attention_heads=heads,
        vocab_size=vocab,
        max_position_embeddings=positions,
        word_embed_proj_dim=hidden,
        pad_token_id=1,
        bos_token_id=2,
        eos_token_id=2,
    )


def build_model(shape: str, seed: int = 0) -> Any:
    """An OPTForCausalLM of ``shape`` with random weights, float32, on the CPU, in eval mode."""
    import torch
    from transformers import OPTForCausalLM

    torch.manual_seed(seed)
    return OPTForCausalLM(opt_config(shape)).eval()


def tiny_path() -> Path:
    from optinspect.model.spec import tiny_path as path

    return path()


def tiny_tokenizer() -> Any:
    """The tokenizer shipped with optinspect's tiny model; its ids are < 512."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_path()))


def save_checkpoint(model: Any, folder: Path) -> Path:
    """``model`` saved in ``folder`` with the tiny model's tokenizer (ids < 512)."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copy(tiny_path() / name, folder / name)
    return folder


def wrap_loaded(model: Any, tokenizer: Any) -> Any:
    """Present an in-memory model to optinspect's library as if ``load_model`` made it."""
    from optinspect.model.loading import LoadedModel, ModelSource

    weight, label = next(model.parameters()), "random-weight model"
    source = ModelSource(spec=label, location=label, is_local=True)
    return LoadedModel(model, tokenizer, source, "none", str(weight.device), weight.dtype, True)


def token_ids(tokens: int, rows: int = 1, seed: int = 0) -> Any:
    """[rows, tokens] ids: ``</s>`` then random ids that exist in every vocabulary used here."""
    import torch

    ids = torch.randint(4, 500, (rows, tokens), generator=torch.Generator().manual_seed(seed))
    ids[:, 0] = 2
    return ids


def sentences(count: int, words: tuple[int, int], seed: int = 0) -> list[str]:
    """``count`` sentences of random words, each ``words`` (low, high) words long."""
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(*words))).capitalize()
        for _ in range(count)
    ]
