"""scripts/gpu-check.sh rehearsed on the CPU, and the pieces of scripts/gpu_check.py.

The GPU check gets one short run on a CUDA machine: everything in it that needs no
CUDA runs here on every change, so that run never meets the script's own bugs.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import stat
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "gpu-check.sh"
STEPS = ("install", "environment", "pytest-gpu", "bench-cuda")
#: Answers the two questions the script asks nvidia-smi: which GPU, how much memory used.
FAKE_NVIDIA_SMI = """#!/bin/sh
case "$*" in
    *memory.used*) echo 1234 ;;
    *) echo "Fake GPU 80GB, 999.1, 81559 MiB" ;;
esac
"""


sys.path.insert(0, str(REPO / "scripts"))
import gpu_check  # noqa: E402
import gpu_report  # noqa: E402


def run_check(tmp_path: Path, *options: str, timeout: int = 280) -> subprocess.CompletedProcess:
    """The script as the device machine runs it, with nvidia-smi faked and CUDA absent."""
    tools = tmp_path / "bin"
    tools.mkdir(exist_ok=True)
    smi = tools / "nvidia-smi"
    smi.write_text(FAKE_NVIDIA_SMI, encoding="utf-8")
    smi.chmod(smi.stat().st_mode | stat.S_IXUSR)
    env = dict(os.environ)
    env["PATH"] = f"{tools}{os.pathsep}{env['PATH']}"
    env["PYTHON"] = sys.executable
    # As on the device machine: conftest's settings for this suite are not the script's.
    for name in ("CUDA_VISIBLE_DEVICES", "TRITON_INTERPRET"):
        env.pop(name, None)
    command = ["bash", str(SCRIPT), *options]
    run = {"env": env, "cwd": tmp_path, "timeout": timeout, "check": False}
    return subprocess.run(command, capture_output=True, text=True, **run)


@pytest.mark.slow
def test_the_rehearsal_runs_every_step_and_leaves_its_evidence(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run_check(tmp_path, "--rehearse", str(out))
    summary = (out / "summary.txt").read_text(encoding="utf-8")
    assert proc.returncode == 0, summary + proc.stderr[-3000:]
    assert summary in proc.stdout  # printed too, for the device tool's output tail
    files = {p.name for p in out.iterdir()}
    assert files == {"summary.txt", "junit.xml", "bench-cuda.json", *(f"{s}.log" for s in STEPS)}
    lines = summary.splitlines()
    assert lines[0] == (
        "PASS: every step passed (install environment pytest-gpu bench-cuda); "
        "a rehearsal on the CPU: the GPU tests were skipped"
    )
    assert lines[1] == "GPU: nvidia-smi: Fake GPU 80GB driver 999.1, 81559 MiB"
    assert lines[2].startswith("tests: 0 passed, 0 failed, 0 errors, ")
    for name in STEPS:
        row = next(line for line in lines if line.startswith(f"{name} "))
        assert row.split()[1] == "ok" and row.endswith("1234 MiB"), row
    # The wheel line, run by the script on a small wheel it built and slimmed.
    install = (out / "install.log").read_text(encoding="utf-8")
    assert "-m pip install --disable-pip-version-check --no-index --no-deps --target " in install
    assert (
        "optinspect_fake_native-0.1.0-py3-none-manylinux_2_24_x86_64.whl: 5 libraries dropped"
        in proc.stderr
    )
    # A wheel for another Python would make pip refuse the whole line: it is left out.
    skipped = "skipped optinspect_fake_native-0.1.0-cp27-cp27m-win32.whl: not for this Python"
    assert skipped in install
    # The environment: versions and paths against pyproject, the wheel's package found.
    torch_row = next(line for line in lines if line.startswith("  torch ") and "wants" in line)
    assert torch_row.startswith(f"  torch {importlib.metadata.version('torch')} (wants >=2.3,<3) /")
    assert ": optinspect_fake_native 0.1.0" in summary
    assert "int8 matmul [64, 512] x [512, 256] on cpu: relative error 0.0" in summary
    assert "NF4 round trip [256, 512] on cpu: relative error 0." in summary
    assert "first call (compile)" in summary and "min/max/counts equal" in summary
    # Only the GPU files were collected, and every test there skipped without CUDA.
    cases = list(ET.parse(out / "junit.xml").getroot().iter("testcase"))
    assert {c.get("classname") for c in cases} == {"tests.test_gpu", "tests.test_fused"}
    assert all(c.find("skipped") is not None for c in cases)
    names = {c.get("name") for c in cases}
    assert "test_device_map_with_cpu_offload_gives_the_plain_statistics" in names
    assert "test_nccl_takes_the_rank_gpu_and_the_timeout_in_one_process" in names
    pytest_log = (out / "pytest-gpu.log").read_text(encoding="utf-8")
    assert " -m gpu -p no:cacheprovider -v -rA --durations=15 " in pytest_log
    assert "-o faulthandler_timeout=60 " in pytest_log
    # The benchmark's own code ran on the CPU and its JSON became the summary's figures.
    bench = json.loads((out / "bench-cuda.json").read_text(encoding="utf-8"))["cuda"]
    assert [row["quant"] for row in bench["rows"]] == ["8bit", "none"]
    assert "bench-cuda: cpu (a rehearsal, not a measurement); small; 8 tokens" in summary
    assert "  8bit: load " in summary and "trace/bare " in summary


def test_a_failing_and_a_timed_out_step_leave_their_evidence(tmp_path: Path) -> None:
    broken = tmp_path / "wheels"
    broken.mkdir()
    (broken / "broken-0.1-py3-none-any.whl").write_text("not a zip file", encoding="utf-8")
    out = tmp_path / "out"
    # Importing torch and bitsandbytes alone takes longer than 1 s: the step times out.
    options = ["--only", "install,environment", "--cap", "environment=1", "--wheels", str(broken)]
    proc = run_check(tmp_path, "--rehearse", *options, str(out))
    summary = (out / "summary.txt").read_text(encoding="utf-8")
    assert proc.returncode == 1, summary
    lines = summary.splitlines()
    assert lines[0] == "FAIL: install environment (see failures below)"
    assert {p.name for p in out.iterdir()} == {"summary.txt", "install.log", "environment.log"}
    install_row = next(ln for ln in lines if ln.startswith("install "))
    assert install_row.split()[1:4] == ["FAILED", "(exit", "1)"]
    assert "TIMED OUT (cap 1 s)" in next(ln for ln in lines if ln.startswith("environment "))
    assert not any(ln.startswith(("pytest-gpu ", "bench-cuda ")) for ln in lines)
    # Each failure names itself and shows the tail of its log, pip's error included.
    assert "install: failed with exit 1; the last lines of install.log:" in summary
    assert "    | " + last_line(out / "install.log") in lines
    assert "environment: timed out after " in summary
    assert "s (cap 1 s); the last lines of environment.log:" in summary
    assert "    | " + last_line(out / "environment.log") in lines
    log = (out / "environment.log").read_text(encoding="utf-8")
    assert log.startswith("$ ") and "scripts/gpu_check.py environment --device cpu" in log
    # SIGINT, not SIGKILL: Python says where it was.
    assert "KeyboardInterrupt" in log


def last_line(log: Path) -> str:
    return [ln for ln in log.read_text(encoding="utf-8").splitlines() if ln.strip()][-1][:300]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ([], "Error: no OUTDIR: bash scripts/gpu-check.sh [--rehearse] OUTDIR"),
        (
            ["--only", "pytest,bench-cuda", "out"],
            "Error: unknown step 'pytest' in --only: use install environment pytest-gpu bench-cuda",
        ),
        (
            ["--cap", "pytest-gpu=0", "out"],
            "Error: --cap pytest-gpu=0: give STEP=SECONDS, at least 1",
        ),
        (["--budget"], "Error: --budget needs a value"),
        (["--fast", "out"], "Error: unknown option --fast: see bash scripts/gpu-check.sh --help"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    tmp_path: Path, options: list[str], message: str
) -> None:
    proc = run_check(tmp_path, *options, timeout=30)
    assert (proc.returncode, proc.stderr, proc.stdout) == (2, message + "\n", "")
    assert not (tmp_path / "out").exists()


def test_slimming_keeps_one_toolkit_and_a_consistent_record(tmp_path: Path) -> None:
    wheel = gpu_check.fake_wheel(tmp_path)
    dropped, before, after = gpu_check.slim_wheel(wheel, ["cuda130"])
    assert after < before
    package = "optinspect_fake_native"
    assert sorted(Path(n).name for n in dropped) == [
        f"libfake_{v}.so" for v in ("cuda118", "cuda128", "cuda132", "rocm64", "xpu2025")
    ]
    with zipfile.ZipFile(wheel) as slim:
        names = set(slim.namelist())
        record = slim.read(f"{package}-0.1.0.dist-info/RECORD").decode().splitlines()
    info = f"{package}-0.1.0.dist-info"
    assert names == {
        f"{package}/__init__.py",
        f"{package}/libfake_cpu.so",
        f"{package}/libfake_cuda130.so",
        f"{info}/METADATA",
        f"{info}/WHEEL",
        f"{info}/RECORD",
    }
    assert {line.split(",")[0] for line in record} == names


def test_slimming_to_a_library_the_wheel_lacks_is_refused(tmp_path: Path) -> None:
    wheel = gpu_check.fake_wheel(tmp_path)
    with pytest.raises(SystemExit) as error:
        gpu_check.slim_wheel(wheel, ["cuda999"])
    assert str(error.value) == (
        "Error: no library of optinspect_fake_native-0.1.0-py3-none-manylinux_2_24_x86_64.whl "
        "matches ['cuda999']: it has libfake_cuda118.so, libfake_cuda128.so, "
        "libfake_cuda130.so, libfake_cuda132.so, libfake_rocm64.so, libfake_xpu2025.so"
    )
    assert zipfile.ZipFile(wheel).testzip() is None  # left as it was


def test_without_pip_the_wheels_are_unpacked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    wheel = gpu_check.fake_wheel(tmp_path / "wheels")
    real = gpu_check.importlib.util.find_spec
    monkeypatch.setattr(
        gpu_check.importlib.util, "find_spec", lambda name: None if name == "pip" else real(name)
    )
    assert gpu_check.install_wheels(tmp_path / "wheels", tmp_path / "site") == 0
    assert (tmp_path / "site" / "optinspect_fake_native" / "libfake_cuda130.so").exists()
    assert capsys.readouterr().out.splitlines() == [
        "skipped optinspect_fake_native-0.1.0-cp27-cp27m-win32.whl: not for this Python and "
        "platform",
        "no pip here: the wheels are unpacked instead",
        f"unpacked {wheel.name} into {tmp_path / 'site'}",
    ]


def test_no_wheel_to_carry_is_a_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert gpu_check.install_wheels(tmp_path, tmp_path / "site") == gpu_report.PROBLEMS
    assert capsys.readouterr().out == (
        f"no wheel in {tmp_path}: see docs/gpu-check.md for the pip download lines\n"
    )


def test_a_carried_wheel_whose_requirement_is_missing_is_a_problem(tmp_path: Path) -> None:
    site = tmp_path / "site"
    files = {"carried/__init__.py": b""}
    needs = (
        "no-such-distribution>=1.0",
        "torch>=1.0",
        "ignored-on-windows; sys_platform == 'win32'",
    )
    wheel = gpu_check.write_wheel(tmp_path, "carried", "2.0", "py3-none-any", files, needs)
    gpu_check.unpack_wheels(site, [wheel])
    report = gpu_report.Report("environment:")
    gpu_report.check_carried(report, site)
    assert report.problems == ["carried 2.0 needs no-such-distribution>=1.0: missing"]
    assert f"  carried wheels installed in {site}: carried 2.0" in report.section


def test_a_typer_older_than_the_minimum_is_a_problem_with_the_wheels_to_carry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata, "version", lambda name: "0.24.1" if name == "typer" else real(name)
    )
    report = gpu_report.Report("environment:")
    gpu_report.check_packages(report, None)
    problem = next(p for p in report.problems if p.startswith("typer"))
    assert problem.startswith("typer 0.24.1 (wants >=0.29,<1) /") and problem.endswith(": too old")
    assert any("carry their wheels (docs/gpu-check.md)" in line for line in report.section)


def test_no_cuda_stops_a_cuda_run_after_the_report(tmp_path: Path) -> None:
    section = tmp_path / "section"
    code = gpu_check.main(["environment", "--device", "cuda", "--section", str(section)])
    text = section.read_text(encoding="utf-8")
    assert code == gpu_report.FATAL
    assert "  PROBLEM: no CUDA device: the GPU tests and the benchmark cannot run" in text
    assert "  transformers " in text  # the versions are still reported


JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="4">
<testcase classname="tests.test_gpu" name="test_a[8bit]" time="12.5"/>
<testcase classname="tests.test_gpu" name="test_b" time="3.0">
<failure message="AssertionError: {'cpu'} is not the split meant&#10;more">trace</failure>
</testcase>
<testcase classname="tests.test_fused" name="test_c[c++]" time="0.0">
<skipped message="compiled kernel not built">why</skipped></testcase>
<testcase classname="tests.test_stats" name="test_d" time="0.1"/>
</testsuite></testsuites>
"""


def test_the_pytest_section_counts_and_names_failures(tmp_path: Path) -> None:
    (tmp_path / "junit.xml").write_text(JUNIT, encoding="utf-8")
    (tmp_path / "log").write_text("Triton statistics kernel: no fallback in this run\n")
    section = tmp_path / "section"
    argv = [
        "pytest-section",
        "--junit",
        str(tmp_path / "junit.xml"),
        "--log",
        str(tmp_path / "log"),
    ]
    code = gpu_check.main([*argv, "--section", str(section)])
    assert code == gpu_check.PROBLEMS  # a test from a CPU file was collected
    assert section.read_text(encoding="utf-8").splitlines() == [
        "tests: 2 passed, 1 failed, 0 errors, 1 skipped, in 16 s (junit.xml)",
        "  FAILURE tests/test_gpu.py::test_b: AssertionError: {'cpu'} is not the split meant",
        "  PROBLEM: tests/test_stats.py::test_d is not in the GPU files "
        "tests/test_gpu.py, tests/test_fused.py",
        "  slowest: test_a[8bit] 12.5 s; test_b 3.0 s; test_d 0.1 s; test_c[c++] 0.0 s",
        "  skipped 1: compiled kernel not built",
        "  Triton statistics kernel: no fallback in this run",
    ]


def cuda_row(quant: str, triton: str) -> dict:
    def series(times: list[float], base: list[float]) -> dict:
        return {"times": times, "ratios": [t / b for t, b in zip(times, base, strict=True)]}

    bare = [0.020, 0.022, 0.021]
    return {
        "quant": quant,
        "load_s": 11.25,
        "series": {
            "bare forward": series(bare, bare),
            "optinspect: every module hooked, statistics on": series([0.04, 0.044, 0.042], bare),
            "optinspect: every module hooked, eager torch statistics": series(
                [0.08, 0.088, 0.084], bare
            ),
        },
        "triton": triton,
        "peak_gib bare forward": 1.5,
        "peak_gib optinspect: every module hooked, statistics on": 2.25,
    }


def test_the_bench_section_gives_the_key_figures(tmp_path: Path) -> None:
    doc = {
        "cuda": {
            "device": "NVIDIA H100 80GB HBM3",
            "model": "opt-1.3b shape",
            "tokens": 256,
            "rows": [cuda_row("8bit", "in use"), cuda_row("none", "failed, eager used: X")],
        }
    }
    (tmp_path / "b.json").write_text(json.dumps(doc), encoding="utf-8")
    section = tmp_path / "section"
    code = gpu_check.main(
        ["bench-section", "--json", str(tmp_path / "b.json"), "--section", str(section)]
    )
    assert code == gpu_check.PROBLEMS
    assert section.read_text(encoding="utf-8").splitlines() == [
        "bench-cuda: NVIDIA H100 80GB HBM3; opt-1.3b shape; 256 tokens",
        "  8bit: load 11.2 s; bare forward 21.0 ms; trace/bare 2.00x; eager statistics/bare "
        "4.00x; Triton/eager statistics 0.50x; peak GPU bare / traced 1.50 / 2.25 GiB; "
        "Triton in use",
        "  none: load 11.2 s; bare forward 21.0 ms; trace/bare 2.00x; eager statistics/bare "
        "4.00x; Triton/eager statistics 0.50x; peak GPU bare / traced 1.50 / 2.25 GiB; "
        "Triton failed, eager used: X",
        "  PROBLEM: none: the statistics did not run on Triton: failed, eager used: X",
    ]
