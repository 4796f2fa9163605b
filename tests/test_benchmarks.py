"""benchmarks/run.py --quick runs end to end and writes every section; no timing is asserted.
``--merge`` puts some sections into an existing report and leaves the rest alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SECTIONS = (
    "# Benchmarks",
    "## Machine",
    "## Versions",
    "## Goals",
    "## 1. Hook overhead",
    "## 2. Peers",
    "## 3. Start-up",
    "## 4. Configuration-only work",
    "## 5. Batch throughput",
    "## 6. End to end",
    "## 7. CUDA",
    "## 8. Model server",
)


@pytest.mark.slow
def test_quick_run_writes_every_section(tmp_path: Path) -> None:
    output = tmp_path / "B.md"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run.py"), "--quick", "--output", str(output)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = output.read_text(encoding="utf-8")
    for heading in SECTIONS:
        assert heading in text, heading
    # No section may have failed, whatever the figures are.
    assert "This section failed" not in text, text
    assert "failed: `" not in text, text
    assert "Quick mode" in text
    assert "| `optinspect --help` |" in text
    assert "| 10 | bare forward |" in text
    end_to_end = text.split("## 6. End to end", 1)[1].split("## 7.", 1)[0]
    assert "| wall time (outside) |" in end_to_end
    assert "| `optinspect tree --model facebook/opt-175b` |" in text
    imports = text.split("### What a local load imports", 1)[1].split("## 4.", 1)[0]
    assert (
        "`transformers/masking_utils.py` | `transformers/generation/utils.py:49` | 19 |" in imports
    )
    assert "`'bitsandbytes' in sys.modules` is False" in imports
    server = text.split("## 8. Model server", 1)[1]
    row = next(line for line in server.splitlines() if line.startswith("| tiny | none | trace |"))
    assert row.endswith("| yes |"), row  # the served output is the local output
    assert "| 3 of 3 | stopped by `serve --stop`" in server
    assert "a trace of the tiny model through the server" in text


OLD_REPORT = """# Benchmarks

Written by `python benchmarks/run.py` on then; the run took 9 s. Do not edit it.

Every figure is a median.

## Machine

| CPU |
|---|
| old |

## Goals

| measure | goal | this run | result |
|---|---|---|---|
| overhead | < 1 | 0.9 | met |
| start-up | < 2 | 3 | **missed** |

## 1. Hook overhead

old one

## 3. Start-up

old three

## 7. CUDA

old seven

Time per section: overhead 1 s.
"""

NEW_SECTIONS = """# Benchmarks

Written by `python benchmarks/run.py --only serve`; do not edit it.

## Machine

| CPU |
|---|
| new |

## Goals

| measure | goal | this run | result |
|---|---|---|---|
| start-up | < 2 | 1 | met |
| server | < 0.5 | 0.4 | met |

## 3. Start-up

new three

## 8. Model server

new eight
"""


def test_merge_replaces_and_inserts_sections_and_goal_rows() -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_report

    results = {"started": "now", "total_s": 5.0, "quick": False}
    merged = bench_report.merge(OLD_REPORT, NEW_SECTIONS, results, ["--only", "serve", "--merge"])
    assert merged.startswith(
        "# Benchmarks\n\nWritten by `python benchmarks/run.py` on then; the run took 9 s. "
        "Do not edit it.\n\nSections 3, 8 were rewritten alone by "
        "`python benchmarks/run.py --only serve --merge` on now, with the goals they "
        "measure; that took 5.00 s.\n\nEvery figure is a median.\n\n## Machine\n\n"
        "| CPU |\n|---|\n| old |"
    ), merged
    assert "| old |" in merged and "| new |" not in merged  # the machine of the full run
    goals = merged.split("## Goals", 1)[1].split("## 1.", 1)[0]
    assert "| overhead | < 1 | 0.9 | met |\n| start-up | < 2 | 1 | met |\n" in goals
    assert goals.rstrip().endswith("| server | < 0.5 | 0.4 | met |")
    assert "old one" in merged and "old seven" in merged
    assert "old three" not in merged and "new three" in merged
    assert merged.index("## 7. CUDA") < merged.index("## 8. Model server")
    assert merged.endswith("new eight\n\nTime per section: overhead 1 s.\n")
    assert "\n\n\n" not in merged
    again = bench_report.merge(merged, NEW_SECTIONS, results, ["--only", "serve", "--merge"])
    assert again == merged  # the note of the same sections is replaced, not repeated


def test_the_cuda_section_imports_and_parses_its_arguments_without_a_gpu(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # scripts/gpu-check.sh runs `run.py --only cuda --repeats 3` on the GPU machine: the
    # opt-1.3b shape, 3 timed rounds after 1 warm-up. Its CPU rehearsal runs the section.
    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_cuda
    import run

    args = run.parse_args(["--only", "cuda", "--repeats", "3", "--json", "c.json"])
    assert (args.only, args.device, args.json, args.quick) == (
        "cuda",
        "cuda",
        Path("c.json"),
        False,
    )
    assert run.plan(args)["cuda"] == (3, 1)
    assert bench_cuda.OPT_1_3B["hidden_size"] == 2048
    assert run.main(["--only", "cuda"]) == 1  # CUDA is hidden in this suite
    assert capsys.readouterr().err == "[benchmarks] --only cuda: CUDA is not available here\n"


def test_timing_series_are_written_as_their_fields() -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_util
    import run

    series = bench_util.Series("bare forward", times=[0.5], ratios=[1.0])
    assert run.as_json(series) == {
        "label": "bare forward",
        "times": [0.5],
        "ratios": [1.0],
        "note": "",
    }
