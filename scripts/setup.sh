#!/usr/bin/env bash
# Create .venv and install optinspect into it, with the right PyTorch build:
# the CUDA build where an NVIDIA GPU answers, else the CPU build (a few hundred MB
# instead of several GB of CUDA libraries). Every other package comes at the exact
# version of requirements/lock.txt, the set CI passed with. Safe to run again.
#
#   scripts/setup.sh            .venv, from the lock
#   scripts/setup.sh --latest   .venv-latest, the newest releases pyproject.toml admits
#                               (torch stays at the build below): how to learn early
#                               what an upstream release breaks (docs/install.md)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_VERSION=${OPTINSPECT_TORCH_VERSION:-2.13.0}
CPU_INDEX=https://download.pytorch.org/whl/cpu
LOCK=requirements/lock.txt
VENV=.venv
LATEST=0
for arg in "$@"; do
    case "$arg" in
        --latest) LATEST=1 VENV=.venv-latest ;;
        -h | --help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "setup: unknown option $arg (try --help)" >&2; exit 2 ;;
    esac
done

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check "$@"; }

if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
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

# torch stays the build installed above: a newer release would be a CUDA build.
held=$(mktemp)
trap 'rm -f "$held"' EXIT
"$VENV/bin/python" -c "import torch; print('torch==' + torch.__version__.split('+')[0])" >"$held"

if [ "$LATEST" = 1 ]; then
    echo "setup: the newest releases that pyproject.toml admits, in $VENV" >&2
    pip install -q --upgrade --upgrade-strategy eager -c "$held" -e ".[test]"
else
    here=$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    locked=$(sed -n '1s/^# python \([0-9.]*\),.*/\1/p' "$LOCK")
    if [ "$here" = "$locked" ]; then
        pip install -q -c "$LOCK" -c "$held" -e ".[test]"
    else
        echo "setup: $LOCK is for Python $locked, this is $here: installing from" \
            "pyproject.toml's ranges instead" >&2
        pip install -q -c "$held" -e ".[test]"
    fi
fi
"$VENV/bin/python" -m pip freeze --exclude-editable >"$VENV/installed.txt"
echo "setup: ready; run $VENV/bin/optinspect --help (versions in $VENV/installed.txt)" >&2
