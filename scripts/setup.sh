#!/usr/bin/env bash
# Create .venv and install optinspect into it, with the right PyTorch build:
# the CUDA build where an NVIDIA GPU answers, else the CPU build (a few hundred MB
# instead of several GB of CUDA libraries). Safe to run again; it skips what is done.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_VERSION=${OPTINSPECT_TORCH_VERSION:-2.13.0}
CPU_INDEX=https://download.pytorch.org/whl/cpu

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
pip() { .venv/bin/python -m pip --disable-pip-version-check "$@"; }

if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        echo "setup: NVIDIA GPU found, installing the CUDA build of torch" >&2
        pip install -q "torch==$TORCH_VERSION"
    else
        echo "setup: no GPU, installing the CPU build of torch" >&2
        # A local wheel (find-links) or the configured index may already carry the
        # +cpu build; otherwise PyTorch's own CPU index does.
        pip install -q "torch==$TORCH_VERSION+cpu" 2>/dev/null \
            || pip install -q --index-url "$CPU_INDEX" "torch==$TORCH_VERSION+cpu"
    fi
fi

pip install -q -e ".[test]"
echo "setup: ready; run .venv/bin/optinspect --help" >&2
