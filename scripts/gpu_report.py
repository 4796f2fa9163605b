"""The environment report of the GPU check, and the Report every summary section is made of.

What a GPU run needs, found where and in which version, against pyproject.toml's
minimums and the requirements of the carried wheels; which library bitsandbytes
loaded, with one int8 matmul and one NF4 round trip; the Triton statistics kernel
against the eager path. Only the standard library is imported at the top: each
check imports what it checks, so a missing package is a finding, not a crash.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROBLEMS, FATAL = 3, 4
#: The test extras a GPU run does not use: linting and --png images.
UNUSED_HERE = {"ruff", "matplotlib"}
OPTIONAL_HERE = {"pytest-timeout": "a per-test timeout; without it faulthandler only dumps"}
#: Bounds of the bitsandbytes smoke, relative errors against float64: int8 rounds each
#: element to 1/127 of its row's absmax (about 1% on a product of gaussian rows);
#: NF4 keeps 16 levels per block of 64 (about 9% rms on gaussian weights).
INT8_BOUND, NF4_BOUND = 0.03, 0.15


class Report:
    """Lines for the log (everything) and the summary section (what matters), and problems."""

    def __init__(self, title: str) -> None:
        self.section: list[str] = [title]
        self.problems: list[str] = []

    def say(self, line: str, summary: bool = True) -> None:
        print(line, flush=True)
        if summary:
            self.section.append("  " + line)

    def problem(self, line: str) -> None:
        self.problems.append(line)
        self.say("PROBLEM: " + line)

    def write(self, path: Path | None) -> None:
        if path is not None:
            path.write_text("\n".join(self.section) + "\n", encoding="utf-8")


def minimums() -> dict[str, Any]:
    """pyproject's requirements of what a GPU run imports, by distribution name."""
    import tomllib
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["test"]
    found = {}
    for text in wanted:
        requirement = Requirement(text)
        if requirement.name in UNUSED_HERE:
            continue
        if requirement.marker is None or requirement.marker.evaluate():
            found[requirement.name] = requirement
    return found


def _wants(requirement: Any) -> str:
    """The range as people write it, the lower bound first: ``>=2.3,<3``."""
    specs = sorted(requirement.specifier, key=lambda s: (not s.operator.startswith(">"), str(s)))
    return ",".join(str(s) for s in specs)


def _where(module_name: str) -> str:
    import importlib.util

    spec = importlib.util.find_spec(module_name)
    origin = spec.origin if spec is not None else None
    return str(Path(origin).parent) if origin else "?"


def check_packages(report: Report, site: Path | None) -> None:
    """Each package a GPU run imports: its version and path against pyproject's minimum."""
    import importlib
    import importlib.metadata as metadata

    from optinspect.model.quiet import no_hub_kernels

    report.say(f"python {sys.version.split()[0]} {sys.executable}")
    unfit = set()
    rows = [*minimums().items(), *((name, None) for name in OPTIONAL_HERE)]
    for name, requirement in rows:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            if requirement is None:
                report.say(f"{name}: absent ({OPTIONAL_HERE[name]})")
            else:
                unfit.add(name)
                report.problem(f"{name}: missing (pyproject wants {_wants(requirement)})")
            continue
        module = name.replace("-", "_")
        try:
            with no_hub_kernels():
                importlib.import_module(module)
        except Exception as e:  # any import failure is the finding
            unfit.add(name)
            report.problem(f"{name} {version}: import fails: {type(e).__name__}: {e}")
            continue
        path = _where(module)
        carried = " (carried)" if site is not None and path.startswith(str(site)) else ""
        wants = _wants(requirement) if requirement is not None else "optional"
        line = f"{name} {version} (wants {wants or 'any'}){carried} {path}"
        if requirement is not None and not requirement.specifier.contains(version, True):
            unfit.add(name)
            floors = [s for s in requirement.specifier if s.operator.startswith(">")]
            old = any(not s.contains(version, True) for s in floors)
            report.problem(line + (": too old" if old else ": newer than pyproject admits"))
        else:
            report.say(line)
    if "typer" in unfit:
        report.say(
            "typer >= 0.29 needs pydantic, pydantic-core, annotated-types, typing-inspection, "
            "annotated-doc and typing-extensions >= 4.16: carry their wheels (docs/gpu-check.md)"
        )
    if site is not None:
        check_carried(report, site)


def check_carried(report: Report, site: Path) -> None:
    """The carried wheels, and whether what each requires is there in a version it takes."""
    import importlib.metadata as metadata

    from packaging.requirements import Requirement

    carried = sorted(metadata.distributions(path=[str(site)]), key=lambda d: d.metadata["Name"])
    names = ", ".join(f"{d.metadata['Name']} {d.version}" for d in carried)
    report.say(f"carried wheels installed in {site}: {names or 'none'}")
    for dist in carried:
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            try:
                version = metadata.version(requirement.name)
            except metadata.PackageNotFoundError:
                version = None
            if version is None or not requirement.specifier.contains(version, True):
                report.problem(
                    f"{dist.metadata['Name']} {dist.version} needs {requirement}: "
                    f"{'missing' if version is None else version}"
                )


def check_device(report: Report, device: str) -> bool:
    """torch's view of the GPU; False when the check cannot go on."""
    import torch

    cuda = torch.cuda.is_available()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    report.say(
        f"torch {torch.__version__}, CUDA build {torch.version.cuda}, CUDA available: {cuda}"
        + (f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else "")
    )
    if device == "cpu":
        report.say("device: the CPU (a rehearsal: nothing below is a GPU figure)")
        return True
    if not cuda:
        report.problem("no CUDA device: the GPU tests and the benchmark cannot run")
        return False
    count = torch.cuda.device_count()
    props = torch.cuda.get_device_properties(0)
    report.say(
        f"GPU 0 of {count}: {props.name}, compute capability {props.major}.{props.minor}, "
        f"{props.total_memory / 2**30:.1f} GiB; cuDNN {torch.backends.cudnn.version()}"
    )
    import torch.distributed as dist

    nccl = "available" if dist.is_available() and dist.is_nccl_available() else "absent"
    if count < 2:
        why = "one GPU, and NCCL cannot put two ranks on one device"
    else:
        why = f"{count} GPUs, but this check has no many-rank step"
    report.say(f"NCCL {nccl}; many ranks not run: {why} (one rank runs in pytest-gpu)")
    return True


def timed(fn: Callable[[], Any], sync: Callable[[], None]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    sync()
    return value, time.perf_counter() - start


def smoke_bitsandbytes(report: Report, device: str) -> None:
    """Which native library bitsandbytes loaded; one int8 matmul, one NF4 round trip."""
    import torch

    from optinspect.model.quiet import no_hub_kernels

    with no_hub_kernels():
        import bitsandbytes.functional as F
        from bitsandbytes import cextension
    lib = cextension.lib
    path = getattr(getattr(lib, "_lib", None), "_name", None)
    report.say(f"bitsandbytes backend {cextension.BNB_BACKEND}: {type(lib).__name__} {path}")
    if device == "cuda" and not getattr(lib, "compiled_with_cuda", False):
        # vars(): the library object answers any other attribute with a stand-in function.
        why = vars(lib).get("error_msg") or f"it loaded {type(lib).__name__} {path}"
        report.problem(f"bitsandbytes did not load its CUDA library: {why.splitlines()[0]}")
    try:
        import transformers.utils as tu

        report.say(f"transformers sees bitsandbytes: {tu.is_bitsandbytes_available()}")
    except Exception as e:  # an older transformers may lack the helper
        report.say(f"transformers' bitsandbytes check failed: {type(e).__name__}: {e}")
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(64, 512, generator=generator).to(device, torch.float16)
    w = torch.randn(256, 512, generator=generator).to(device, torch.float16)
    want = a.double() @ w.double().T
    try:
        a8, a_stats, _ = F.int8_vectorwise_quant(a)
        w8, w_stats, _ = F.int8_vectorwise_quant(w)
        got = F.int8_mm_dequant(F.int8_linear_matmul(a8, w8), a_stats, w_stats)
        error = float((got.double() - want).norm() / want.norm())
        line = f"int8 matmul [64, 512] x [512, 256] on {device}: relative error {error:.4f}"
        check = report.say if error < INT8_BOUND else report.problem
        check(f"{line} (bound {INT8_BOUND})")
    except Exception as e:
        traceback.print_exc()
        report.problem(f"int8 matmul on {device} failed: {type(e).__name__}: {e}")
    try:
        packed, state = F.quantize_4bit(w, quant_type="nf4")
        back = F.dequantize_4bit(packed, state).double()
        error = float((back - w.double()).norm() / w.double().norm())
        worst = float((back - w.double()).abs().max() / w.double().abs().max())
        line = (
            f"NF4 round trip [256, 512] on {device}: relative error {error:.4f}, "
            f"worst {worst:.3f} of absmax"
        )
        check = report.say if error < NF4_BOUND else report.problem
        check(f"{line} (bound {NF4_BOUND})")
    except Exception as e:
        traceback.print_exc()
        report.problem(f"NF4 round trip on {device} failed: {type(e).__name__}: {e}")


def smoke_triton(report: Report, device: str) -> None:
    """The Triton statistics kernel against the eager exact path: first call (compile),
    later calls, and whether min, max and counts agree exactly and the sums closely."""
    import torch

    from optinspect.engine import fused_triton, stats

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    shape = (4, 256, 2048) if device == "cuda" else (1, 4, 300)  # the interpreter is slow
    x = (torch.randn(*shape, generator=torch.Generator().manual_seed(1)) * 3).to(
        device, torch.float16
    )
    where = "compiled for CUDA" if device == "cuda" else "interpreted on the CPU"
    got, first = timed(lambda: fused_triton.triton_partials(x), sync)
    if fused_triton._broken is not None:
        report.problem(f"the Triton kernel failed, eager would be used: {fused_triton._broken}")
        return
    if got is None:
        report.problem("the Triton kernel is unavailable (Triton not importable?)")
        return
    later = statistics.median(
        timed(lambda: fused_triton.triton_partials(x), sync)[1] for _ in range(5)
    )
    eager = statistics.median(
        timed(lambda: stats._exact_partials(x.float()), sync)[1] for _ in range(5)
    )
    want = stats._exact_partials(x.float())
    exact = all(torch.equal(got[..., c], want[..., c]) for c in range(2, 8))
    # Both sum in float64 in different orders: a row's sum agrees to n * 2**-53 of the
    # sum of its magnitudes (2.3e-13 for 2048 elements), its squared deviations alike.
    magnitude = x.double().abs().sum(-1)
    sums = float(((got[..., 0] - want[..., 0]).abs() / magnitude.clamp(min=1e-300)).max())
    m2s = float(((got[..., 1] - want[..., 1]).abs() / want[..., 1].clamp(min=1e-300)).max())
    drift = max(sums, m2s)
    report.say(
        f"Triton statistics [{', '.join(map(str, shape))}] float16, {where}: first call "
        f"(compile) {first:.2f} s, then {later * 1e3:.3f} ms against eager {eager * 1e3:.3f} ms; "
        f"min/max/counts {'equal' if exact else 'DIFFER'}, sums within {drift:.1e} (bound 1e-10)"
    )
    if not exact or drift > 1e-10:
        report.problem("the Triton partials disagree with the eager exact partials")


def environment(args: argparse.Namespace) -> int:
    report = Report("environment:")
    if args.device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"  # read when triton is first imported
    code = 0
    try:
        try:
            import torch
        except Exception as e:
            report.problem(f"torch cannot be imported: {type(e).__name__}: {e}")
            return FATAL
        if not check_device(report, args.device):
            code = FATAL
        check_packages(report, args.site)
        if code != FATAL:
            for smoke in (smoke_bitsandbytes, smoke_triton):
                try:
                    smoke(report, args.device)
                except Exception as e:
                    traceback.print_exc()
                    report.problem(f"{smoke.__name__} failed: {type(e).__name__}: {e}")
            if args.device == "cuda":
                peak = torch.cuda.max_memory_allocated() / 2**20
                report.say(f"peak GPU memory allocated by torch in this step: {peak:.0f} MiB")
    except Exception as e:
        traceback.print_exc()
        report.problem(f"the environment report stopped: {type(e).__name__}: {e}")
    finally:
        report.write(args.section)
    return code or (PROBLEMS if report.problems else 0)
