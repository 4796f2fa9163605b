"""benchmarks/run.py: a quick run writes every section's rows between its markers and leaves
the hand-written prose, and the blocks of sections it did not run, as they were. No timing
is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_report  # noqa: E402
import bench_util  # noqa: E402
import run  # noqa: E402

PROSE = "A paragraph written by hand: | pipes, `code` and <!-- a comment --> stay as they are."
OLD_PEERS = "_Measured on 2026-11-29 06:06 UTC by `python benchmarks/run.py`._\n\n| old | table |\n"
HAND_WRITTEN = f"""# Benchmarks

<!-- generated: header -->
<!-- generated: end -->

{PROSE}

## Goals

<!-- generated: goals -->
<!-- generated: end -->

## 1. Hook overhead

{PROSE}

<!-- generated: overhead -->
stale figures
<!-- generated: end -->

## 2. Peers

<!-- generated: peers -->
{OLD_PEERS}<!-- generated: end -->

The end, by hand.
"""


def blocks(text: str) -> dict[str, str]:
    return dict(bench_report.BLOCK.findall(text))


@pytest.mark.slow
def test_a_quick_run_writes_the_rows_of_every_section_and_keeps_the_prose(tmp_path: Path) -> None:
    output = tmp_path / "B.md"
    output.write_text(HAND_WRITTEN, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run.py"), "--quick", "--output", str(output),
         "--json", str(tmp_path / "rows.json")],
        capture_output=True, text=True, cwd=tmp_path, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = output.read_text(encoding="utf-8")
    # The prose and the block of a section this run left out (peers) are as they were.
    assert text.count(PROSE) == 2 and "\n\nThe end, by hand.\n\n## " in text
    found = blocks(text)
    assert found["peers"] == OLD_PEERS
    assert "stale figures" not in text
    ran = [name for name in run.SECTIONS if name not in ("peers", "cuda")]
    assert set(found) == {"header", "goals", "machine", *run.SECTIONS} - {"cuda"}
    # A section missing from the file is added at its end, under a heading of its own.
    assert text.index("The end, by hand.") < text.index("## 7. Calibrate")
    for name in ran:
        body = found[name]
        assert body.startswith("_Measured on "), name
        assert "**Quick mode: these figures mean little.**" in body
        assert "\n| figure | value | goal | how measured |\n|---|---|---|---|\n| " in body, name
        assert "failed" not in body, body  # whatever the figures are, nothing failed
    rows = json.loads((tmp_path / "rows.json").read_text(encoding="utf-8"))
    assert set(rows) == set(ran)
    figures = {name: {row["figure"]: row for row in rows[name]} for name in ran}
    assert figures["overhead"]["10 tokens, 2 threads: bare forward"]["value"].endswith(" ms)")
    assert "`optinspect --help`" in figures["startup"]
    assert "`optinspect tree --model facebook/opt-175b`" in figures["startup"]
    assert "outside total" in figures["e2e"]
    imports = figures["imports"]
    masking = imports["`transformers/masking_utils.py` names `torch._dynamo` (named in the issue)"]
    assert masking["value"].startswith("imported by `transformers/generation/utils.py:49`")
    assert "lines run at import: 19;" in masking["value"]
    assert imports["`'bitsandbytes' in sys.modules` after `--quant none`"]["value"] == "False"
    served = figures["serve"]["tiny, `--quant none`: `trace`"]
    assert served["value"].endswith("same output: yes"), served  # served output is local output
    assert served["goal"] == "< 0.5 s wall through the server"
    server = figures["serve"]["tiny, `--quant none`: the server"]["value"]
    assert "requests 3 of 3; stopped by `serve --stop`" in server
    assert {"bare forward", "naive: forward hooks, .item() per statistic per module"} <= set(
        figures["memory"]
    )
    assert len(figures["calibrate"]) == 3 and len(figures["stream"]) == 6
    # Every row with a goal is in the goals block, with its section and date.
    goals = found["goals"]
    assert "| `optinspect --help` | " in goals and "| startup | " in goals
    assert goals.count("\n") == 2 + sum(bool(r["goal"]) for name in ran for r in rows[name])


def test_a_rewrite_replaces_blocks_adds_new_ones_and_gathers_the_goals() -> None:
    section = bench_report.Section(
        "startup",
        [
            bench_report.Row("`optinspect --help`", "150 ms", "spawn to exit", "< 0.3 s", True),
            bench_report.Row("a | b", "1", "spawn to exit"),
        ],
        note="_Measured on 2026-12-06 10:00 UTC by `python benchmarks/run.py`._",
    )
    body = bench_report.render_section(section)
    assert body == (
        "_Measured on 2026-12-06 10:00 UTC by `python benchmarks/run.py`._\n\n"
        "| figure | value | goal | how measured |\n|---|---|---|---|\n"
        "| `optinspect --help` | 150 ms | < 0.3 s: met | spawn to exit |\n"
        "| a \\| b | 1 |  | as above |\n"
    )
    new = {"startup": body, "serve": "_Measured on 2026-12-07 11:00 UTC by `x`._\n"}
    text = bench_report.rewrite(HAND_WRITTEN, new, {"serve": "6. Model server"})
    assert blocks(text)["startup"] == body
    added = f"<!-- generated: serve -->\n{new['serve']}<!-- generated: end -->\n"
    assert text.endswith("## 6. Model server\n\n" + added)
    assert text.count(PROSE) == 2 and blocks(text)["overhead"] == "stale figures\n"
    assert blocks(text)["goals"] == (
        "| figure | value | goal | section | measured on |\n|---|---|---|---|---|\n"
        "| `optinspect --help` | 150 ms | < 0.3 s: met | startup | 2026-12-06 10:00 UTC |\n"
    )
    # The same rewrite again changes nothing.
    assert bench_report.rewrite(text, new, {"serve": "6. Model server"}) == text


def test_the_cuda_section_imports_and_parses_its_arguments_without_a_gpu(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # scripts/gpu-check.sh runs `run.py --only cuda --repeats 3` on the GPU machine: the
    # opt-1.3b shape, 3 timed rounds after 1 warm-up. Its CPU rehearsal runs the section.
    import bench_cuda  # noqa: F401  (it imports without a GPU)

    args = run.parse_args(["--only", "cuda", "--repeats", "3", "--json", "c.json"])
    assert (args.only, args.device, args.json, args.quick) == (
        ["cuda"],
        "cuda",
        Path("c.json"),
        False,
    )
    assert run.plan(args)["cuda"] == (3, 1)
    assert bench_util.SHAPES["opt-1.3b"][0] == 2048
    assert run.main(["--only", "cuda"]) == 1  # CUDA is hidden in this suite
    assert capsys.readouterr().err == "[benchmarks] --only cuda: CUDA is not available here\n"


def test_timing_series_are_written_as_their_fields() -> None:
    series = bench_util.Series("bare forward", times=[0.5], ratios=[1.0])
    assert run.as_json(series) == {
        "label": "bare forward",
        "times": [0.5],
        "ratios": [1.0],
        "note": "",
    }
