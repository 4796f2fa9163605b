"""No library fetches or runs code from the hub, and nothing they log reaches stderr.

bitsandbytes, on a CPU with AVX512-BF16 and ``kernels`` importable, asks the hub for
a compiled 4-bit kernel when it is imported. The subprocess below makes any CPU look
like that one, and puts a stand-in ``kernels`` first on the path that records every
use, so the test means the same on Intel, AMD and CI machines.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BOOT = r"""
import importlib.abc, importlib.machinery, sys

class ForceAvx512Bf16(importlib.abc.MetaPathFinder):
    # bitsandbytes' CPU backend reads has_avx512bf16() once, when it is imported.
    def find_spec(self, name, path, target=None):
        if name != "bitsandbytes.functional":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            module.has_avx512bf16 = lambda: True

        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, ForceAvx512Bf16())
from optinspect.cli import run
sys.exit(run(sys.argv[1:]))
"""

STAND_IN = r"""
import os

def _record(what):
    with open(os.environ["KERNELS_RECORD"], "a") as f:
        f.write(what + "\n")

_record("import kernels")

def get_kernel(*args, **kwargs):
    _record(f"get_kernel{args}")
    raise RuntimeError("the stand-in fetches nothing")

def __getattr__(name):
    _record(f"kernels.{name}")
    return type(name, (), {"__init__": lambda self, *a, **k: None})
"""


def _stand_in(tmp_path: Path) -> dict[str, str]:
    """The environment of a process that finds the stand-in ``kernels`` first."""
    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels" / "__init__.py").write_text(STAND_IN)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    env["KERNELS_RECORD"] = str(tmp_path / "record.txt")
    return env


def _run_forced(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], str]:
    env = _stand_in(tmp_path)
    record = Path(env["KERNELS_RECORD"])
    proc = subprocess.run(
        [sys.executable, "-c", BOOT, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tmp_path,
    )
    return proc, record.read_text() if record.exists() else ""


@pytest.mark.parametrize("quant", ["8bit", "4bit"])
def test_quantized_load_on_an_avx512_bf16_cpu_fetches_no_hub_kernel(
    tmp_path: Path, quant: str
) -> None:
    proc, record = _run_forced(
        tmp_path, "trace", "Hello world", "--model", "tiny", "--quant", quant, "--format", "json"
    )
    assert proc.returncode == 0, proc.stderr
    assert record == "", f"a library used the hub's kernels package:\n{record}"
    # Nothing a library logs reaches the user: stderr holds optinspect's lines only.
    assert proc.stderr == ""


def test_the_stand_in_kernels_package_is_what_the_libraries_would_reach(tmp_path: Path) -> None:
    """The check above can fail: outside the guard, bitsandbytes does call get_kernel."""
    env = _stand_in(tmp_path)
    boot = BOOT.replace("from optinspect.cli import run\nsys.exit(run(sys.argv[1:]))", "")
    subprocess.run(
        [sys.executable, "-c", boot + "import bitsandbytes"],
        env=env,
        timeout=300,
        capture_output=True,
        check=True,
    )
    record = Path(env["KERNELS_RECORD"]).read_text()
    assert "get_kernel('kernels-community/quantization-bitsandbytes',)" in record


def test_no_hub_kernels_puts_everything_back() -> None:
    from optinspect.model.quiet import no_hub_kernels

    before = sys.modules.get("kernels", "absent")
    env = os.environ.get("USE_HUB_KERNELS", "absent")
    with no_hub_kernels():
        assert sys.modules["kernels"] is None
        assert os.environ["USE_HUB_KERNELS"] == "NO"
        with pytest.raises(ImportError):
            import kernels  # noqa: F401
    assert sys.modules.get("kernels", "absent") is before
    assert os.environ.get("USE_HUB_KERNELS", "absent") == env


def test_loaded_weights_do_not_require_grad(load_tiny) -> None:
    for quant in ("none", "4bit"):
        model = load_tiny(quant).model
        assert not any(p.requires_grad for p in model.parameters())
