#!/usr/bin/env python3
"""The Python half of scripts/gpu-check.sh: carried wheels, the environment report
(gpu_report.py), the summary sections of the test run and of the benchmark.

    python3 scripts/gpu_check.py slim-wheel .whl/bitsandbytes-0.50.2-*.whl   # CUDA 13 only
    python3 scripts/gpu_check.py environment --device cuda --site SITE --section FILE

Only the standard library is imported at the top: the shell script calls this before
anything is known to work, and each command imports what it checks. Exit status: 0
when all is well, 3 when the evidence shows a problem (the check fails, the next step
still runs), 4 when nothing after this can run (no torch, or no CUDA), 2 for usage.
"""

from __future__ import annotations

import argparse
import base64
import faulthandler
import hashlib
import importlib.util
import json
import os
import re
import runpy
import shlex
import statistics
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from collections import Counter
from pathlib import Path

from gpu_report import PROBLEMS, Report, environment

#: A native library built for one accelerator toolkit: libbitsandbytes_cuda130.so.
VARIANT = re.compile(r"_(cuda|rocm|xpu)\d+\.(so|dll|dylib)$")
GPU_FILES = ("tests/test_gpu.py", "tests/test_fused.py")


# ---------------------------------------------------------------------------- wheels


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def write_wheel(
    folder: Path,
    name: str,
    version: str,
    tag: str,
    files: dict[str, bytes],
    requires: tuple[str, ...] = (),
) -> Path:
    """A wheel of ``files`` with the dist-info pip and importlib.metadata read."""
    info = f"{name}-{version}.dist-info"
    members = dict(files)
    needs = "".join(f"Requires-Dist: {r}\n" for r in requires)
    members[f"{info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n{needs}"
    ).encode()
    members[f"{info}/WHEEL"] = (
        f"Wheel-Version: 1.0\nGenerator: gpu_check\nRoot-Is-Purelib: false\nTag: {tag}\n"
    ).encode()
    record = [_record_line(n, d) for n, d in members.items()] + [f"{info}/RECORD,,"]
    members[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:
        for member, data in members.items():
            wheel.writestr(member, data)
    return path


def fake_wheel(folder: Path) -> Path:
    """A small wheel shaped like bitsandbytes': a package, a CPU library and one
    library per toolkit, tagged manylinux_2_24_x86_64 as bitsandbytes 0.50.2 is.
    Beside it, one for a Python nobody runs, as a stale download would be."""
    package = "optinspect_fake_native"
    files = {f"{package}/__init__.py": b'"""A stand-in for a wheel with native libraries."""\n'}
    write_wheel(folder, package, "0.1.0", "cp27-cp27m-win32", files)
    for variant in ("cpu", "cuda118", "cuda128", "cuda130", "cuda132", "rocm64", "xpu2025"):
        files[f"{package}/libfake_{variant}.so"] = variant.encode() * 512
    return write_wheel(folder, package, "0.1.0", "py3-none-manylinux_2_24_x86_64", files)


def slim_wheel(path: Path, keep: list[str]) -> tuple[list[str], int, int]:
    """Drop every toolkit library (``*_cuda118.so``, ``*_rocm64.so``...) whose name holds
    none of ``keep``; the package, its CPU library and its dist-info stay, and RECORD
    loses the dropped lines. The file keeps its name (pip reads the tags from it)."""
    with zipfile.ZipFile(path) as wheel:
        infos = wheel.infolist()
        variants = [i.filename for i in infos if VARIANT.search(i.filename)]
        dropped = [n for n in variants if not any(k in Path(n).name for k in keep)]
        if variants and len(dropped) == len(variants):
            names = ", ".join(Path(n).name for n in variants)
            raise SystemExit(f"Error: no library of {path.name} matches {keep}: it has {names}")
        gone = set(dropped)
        slim = path.with_name(path.name + ".slim")
        with zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as out:
            for info in infos:
                if info.filename in gone:
                    continue
                data = wheel.read(info)
                if info.filename.endswith(".dist-info/RECORD"):
                    lines = data.decode().splitlines()
                    kept = [ln for ln in lines if ln.rsplit(",", 2)[0] not in gone]
                    data = ("\n".join(kept) + "\n").encode()
                out.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
    before = path.stat().st_size
    os.replace(slim, path)
    return dropped, before, path.stat().st_size


def installable(wheels: list[Path]) -> tuple[list[Path], list[Path]]:
    """The wheels this Python can install, and the others (pip refuses a whole command
    for one wheel of another Python or platform). All of them without packaging."""
    try:
        from packaging.tags import sys_tags
        from packaging.utils import parse_wheel_filename
    except ImportError:
        return wheels, []
    here = set(sys_tags())
    fit = [w for w in wheels if here & set(parse_wheel_filename(w.name)[3])]
    return fit, [w for w in wheels if w not in fit]


def install_wheels(folder: Path, target: Path) -> int:
    """``pip install --no-index --no-deps --target`` of the wheels in ``folder`` that this
    Python can install; without pip, they are unpacked. pip's exit status."""
    wheels = sorted(folder.glob("*.whl"))
    if not wheels:
        print(f"no wheel in {folder}: see docs/gpu-check.md for the pip download lines")
        return PROBLEMS
    fit, other = installable(wheels)
    for path in other:
        print(f"skipped {path.name}: not for this Python and platform")
    if importlib.util.find_spec("pip") is None:
        print("no pip here: the wheels are unpacked instead")
        unpack_wheels(target, fit)
        return 0
    # --no-deps: the wheels name torch among their requirements, and pip would reach for it.
    line = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-index"]
    line += ["--no-deps", "--target", str(target), *map(str, fit)]
    print("$ " + shlex.join(line), flush=True)
    return subprocess.call(line)


def unpack_wheels(target: Path, wheels: list[Path]) -> None:
    """What ``pip install --no-deps --target`` does with these wheels, for a Python without
    pip: each wheel's files go into ``target`` as they are."""
    for path in wheels:
        with zipfile.ZipFile(path) as wheel:
            if any(n.split("/", 1)[0].endswith(".data") for n in wheel.namelist()):
                raise SystemExit(f"Error: {path.name} has a .data folder: install it with pip")
            wheel.extractall(target)
        print(f"unpacked {path.name} into {target}")


# ------------------------------------------------------------------ summary sections


def pytest_section(args: argparse.Namespace) -> int:
    report = Report("pytest-gpu:")
    try:
        suite = ET.parse(args.junit).getroot()
    except (OSError, ET.ParseError) as e:
        report.problem(f"no readable JUnit file ({e}): pytest did not finish")
        report.write(args.section)
        return PROBLEMS
    cases = list(suite.iter("testcase"))
    outcome: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    failed = []
    strays = []  # tests from other files: an import error there could end the session
    for case in cases:
        name = f"{case.get('classname', '').replace('.', '/')}.py::{case.get('name')}"
        kind = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "passed")
        outcome[kind] += 1
        if kind == "skipped":
            skipped[next(c for c in case if c.tag == "skipped").get("message", "")] += 1
        elif kind != "passed":
            message = (next(c for c in case if c.tag == kind).get("message") or "").splitlines()
            failed.append(f"{kind.upper()} {name}: {(message or [''])[0][:200]}")
        if not name.startswith(GPU_FILES):
            strays.append(name)
    seconds = sum(float(c.get("time", 0)) for c in cases)
    report.section[0] = (
        f"tests: {outcome['passed']} passed, {outcome['failure']} failed, {outcome['error']} "
        f"errors, {outcome['skipped']} skipped, in {seconds:.0f} s (junit.xml)"
    )
    print(report.section[0])
    for line in failed:
        report.say(line)
    for name in strays:
        report.problem(f"{name} is not in the GPU files {', '.join(GPU_FILES)}")
    slowest = sorted(cases, key=lambda c: -float(c.get("time", 0)))[:5]
    slow = [f"{c.get('name')} {float(c.get('time', 0)):.1f} s" for c in slowest]
    if slowest and float(slowest[0].get("time", 0)) >= 0.5:
        report.say("slowest: " + "; ".join(slow))
    for message, count in skipped.most_common(3):
        report.say(f"skipped {count}: {message[:160]}")
    log = args.log.read_text(encoding="utf-8", errors="replace") if args.log.exists() else ""
    for line in log.splitlines():
        if "Triton statistics kernel" in line:
            report.say(line.strip())
    if not cases:
        report.problem("no GPU test was collected")
    elif outcome["passed"] == 0 and not args.rehearsal:
        report.problem("no GPU test passed")
    report.write(args.section)
    return PROBLEMS if report.problems else 0  # failed tests already fail the step


def _median_ratio(top: list[float], bottom: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(top, bottom, strict=False))


def bench_section(args: argparse.Namespace) -> int:
    report = Report("bench-cuda:")
    try:
        value = json.loads(args.json.read_text(encoding="utf-8"))["cuda"]
    except (OSError, ValueError, KeyError) as e:
        report.problem(f"no readable benchmark JSON ({type(e).__name__}: {e})")
        report.write(args.section)
        return PROBLEMS
    if "error" in value:
        report.problem(f"the section failed: {value['error']}")
        report.write(args.section)
        return PROBLEMS
    report.section[0] = f"bench-cuda: {value['device']}; {value['model']}; {value['tokens']} tokens"
    print(report.section[0])
    for row in value["rows"]:
        series = row["series"]
        bare, traced = (
            series["bare forward"],
            next(v for k, v in series.items() if "statistics on" in k),
        )
        eager = next(v for k, v in series.items() if "eager" in k)
        peaks = [row.get(k) for k in row if k.startswith("peak_gib")]
        peak = " / ".join("n/a" if p is None else f"{p:.2f}" for p in peaks[:2])
        report.say(
            f"{row['quant']}: load {row['load_s']:.1f} s; bare forward "
            f"{statistics.median(bare['times']) * 1e3:.1f} ms; trace/bare "
            f"{statistics.median(traced['ratios']):.2f}x; eager statistics/bare "
            f"{statistics.median(eager['ratios']):.2f}x; Triton/eager statistics "
            f"{_median_ratio(traced['times'], eager['times']):.2f}x; peak GPU bare / traced "
            f"{peak} GiB; Triton {row['triton']}"
        )
        if row["triton"] != "in use" and not args.rehearsal:
            report.problem(f"{row['quant']}: the statistics did not run on Triton: {row['triton']}")
    if len(value["rows"]) != 2:
        report.problem(f"{len(value['rows'])} rows, not one per quantization (8bit, none)")
    report.write(args.section)
    return PROBLEMS if report.problems else 0


# ---------------------------------------------------------------------------- the CLI


def watch(argv: list[str]) -> None:
    """Run a Python script as ``python3 SCRIPT ARGS`` would, with the dump armed."""
    sys.argv = argv
    sys.path.insert(0, str(Path(argv[0]).resolve().parent))
    runpy.run_path(argv[0], run_name="__main__")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fake = commands.add_parser("fake-wheel", help="write a small bitsandbytes-shaped wheel to DIR")
    fake.add_argument("folder", type=Path)
    slim = commands.add_parser("slim-wheel", help="keep one toolkit's library in a wheel")
    slim.add_argument("wheel", type=Path)
    slim.add_argument("--keep", action="append", help="library variant to keep (default cuda130)")
    install = commands.add_parser("install", help="pip install --target the wheels of FOLDER")
    install.add_argument("--target", type=Path, required=True)
    install.add_argument("folder", type=Path)
    env = commands.add_parser("environment", help="versions, paths, bitsandbytes and Triton")
    env.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    env.add_argument("--site", type=Path, help="where the carried wheels were installed")
    env.add_argument("--section", type=Path)
    tests = commands.add_parser("pytest-section", help="the summary of a JUnit file")
    tests.add_argument("--junit", type=Path, required=True)
    tests.add_argument("--log", type=Path, required=True)
    tests.add_argument("--section", type=Path)
    tests.add_argument("--rehearsal", action="store_true")
    bench = commands.add_parser("bench-section", help="the summary of run.py --only cuda's JSON")
    bench.add_argument("--json", type=Path, required=True)
    bench.add_argument("--section", type=Path)
    bench.add_argument("--rehearsal", action="store_true")
    run = commands.add_parser("watch", help="run SCRIPT ARGS with a stack dump before the cap")
    run.add_argument("script", nargs=argparse.REMAINDER)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    # A step that hangs dumps every thread's stack before its cap stops it.
    dump_after = float(os.environ.get("GPU_CHECK_DUMP_AFTER") or 0)
    if dump_after > 0:
        faulthandler.dump_traceback_later(dump_after, exit=False)
    if args.command == "fake-wheel":
        print(fake_wheel(args.folder))
    elif args.command == "slim-wheel":
        dropped, before, after = slim_wheel(args.wheel, args.keep or ["cuda130"])
        print(
            f"{args.wheel.name}: {len(dropped)} libraries dropped, {before / 2**20:.1f} MiB -> "
            f"{after / 2**20:.1f} MiB"
        )
    elif args.command == "install":
        return install_wheels(args.folder, args.target)
    elif args.command == "environment":
        return environment(args)
    elif args.command == "pytest-section":
        return pytest_section(args)
    elif args.command == "bench-section":
        return bench_section(args)
    elif args.command == "watch":
        # Only the separator before the script: a "--" among its own arguments stays.
        script = args.script[1:] if args.script[:1] == ["--"] else args.script
        if not script:
            raise SystemExit("Error: watch needs a script to run")
        watch(script)
    return 0


if __name__ == "__main__":
    sys.exit(main())
