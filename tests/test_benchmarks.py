"""benchmarks/run.py --quick runs end to end and writes every section; no timing is asserted."""

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
