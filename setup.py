"""Adds the optional compiled statistics kernel; pyproject.toml holds everything else.

The kernel (src/optinspect/engine/_fused_stats.cpp) is a plain C++ shared object
loaded with ctypes, not a Python extension module. It is optional: without a
compiler, or when it fails to build, the install still succeeds and
optinspect uses its eager torch statistics.
"""

from __future__ import annotations

import os
import tempfile

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

SOURCE = "src/optinspect/engine/_fused_stats.cpp"
# -O3 auto-vectorises for the baseline of the target (SSE2 on x86-64); no
# -march=native, so a wheel or a shared install runs on any CPU of that target.
BASE_FLAGS = ["-O3", "-std=c++17", "-fno-math-errno"]


class BuildFused(build_ext):
    """build_ext that enables OpenMP when the compiler accepts it, else SIMD pragmas only."""

    def build_extensions(self) -> None:
        if self.compiler.compiler_type == "unix":
            for ext in self.extensions:
                if self._accepts("-fopenmp"):
                    ext.extra_compile_args = [*BASE_FLAGS, "-fopenmp"]
                    ext.extra_link_args = ["-fopenmp"]
                elif self._accepts("-fopenmp-simd"):
                    ext.extra_compile_args = [*BASE_FLAGS, "-fopenmp-simd"]
                else:
                    ext.extra_compile_args = list(BASE_FLAGS)
        super().build_extensions()

    def get_export_symbols(self, ext: Extension) -> list[str]:
        # Not a Python module: there is no PyInit_ function to export.
        return list(ext.export_symbols or [])

    def _accepts(self, flag: str) -> bool:
        with tempfile.TemporaryDirectory() as tmp:
            source = os.path.join(tmp, "probe.cpp")
            with open(source, "w", encoding="utf-8") as f:
                f.write("int main() { return 0; }\n")
            try:
                objects = self.compiler.compile([source], output_dir=tmp, extra_postargs=[flag])
                self.compiler.link_executable(
                    objects, "probe", output_dir=tmp, extra_postargs=[flag]
                )
            except Exception:
                return False
        return True


setup(
    ext_modules=[
        Extension(
            "optinspect.engine._fused_stats",
            sources=[SOURCE],
            language="c++",
            optional=True,
        )
    ],
    cmdclass={"build_ext": BuildFused},
)
