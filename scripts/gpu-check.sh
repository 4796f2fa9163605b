#!/usr/bin/env bash
# GPU check for optinspect: the gpu-marked tests, then the CUDA benchmark section.
#
#   bash scripts/gpu-check.sh LOGDIR
#
# Needs a machine with CUDA; no network is used. torch, transformers and accelerate
# must be importable by python3 (system-wide). Everything else must be carried as
# wheels and put on PYTHONPATH by the caller before running this script:
# bitsandbytes, safetensors, typer, rich, pytest, hypothesis (the tests' imports).
# Nothing is installed here: optinspect runs from src/ through PYTHONPATH.
#
# Writes LOGDIR/<step>.log for each step and LOGDIR/summary.txt, prints the summary,
# and exits non-zero if CUDA or a module is missing or any step failed.
# Each step has a timeout so that the whole check ends within 8 minutes.
set -u

if [ $# -ne 1 ]; then
    echo "usage: bash scripts/gpu-check.sh LOGDIR" >&2
    exit 2
fi
LOGDIR=$1
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$LOGDIR" || exit 2
LOGDIR=$(cd "$LOGDIR" && pwd)
SUMMARY=$LOGDIR/summary.txt
: >"$SUMMARY"
cd "$ROOT" || exit 2
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
FAILED=0

note() { echo "$*" | tee -a "$SUMMARY"; }

finish() {
    note "result: $([ "$FAILED" -eq 0 ] && echo PASS || echo FAIL) (logs in $LOGDIR)"
    echo "----- summary -----"
    cat "$SUMMARY"
    exit "$FAILED"
}

# step NAME SECONDS COMMAND...: run with a timeout, log to LOGDIR/NAME.log, note the outcome.
step() {
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    timeout --kill-after=10 "$limit" "$@" >"$LOGDIR/$name.log" 2>&1
    local rc=$?
    local spent=$((SECONDS - start))
    if [ $rc -eq 0 ]; then
        note "$name: ok (${spent} s)"
    elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        note "$name: TIMED OUT after ${limit} s (see $name.log)"
        FAILED=1
    else
        note "$name: FAILED with exit $rc (${spent} s; see $name.log)"
        tail -n 15 "$LOGDIR/$name.log" | sed 's/^/    /' | tee -a "$SUMMARY"
        FAILED=1
    fi
}

note "gpu-check $(date -u '+%Y-%m-%d %H:%M UTC') in $ROOT"

# 1. Environment: every module the tests import, and a visible CUDA device.
step environment 60 python3 - <<'PY'
import importlib
import sys

needed = ["torch", "transformers", "accelerate", "bitsandbytes", "safetensors",
          "typer", "rich", "pytest", "hypothesis", "triton"]
missing = []
for name in needed:
    try:
        module = importlib.import_module(name)
        print(f"{name} {getattr(module, '__version__', '?')}")
    except Exception as e:  # an import that fails for any reason counts as missing
        missing.append(name)
        print(f"{name}: MISSING ({type(e).__name__}: {e})")
if missing:
    print("missing modules: " + ", ".join(missing)
          + " (carry their wheels and put them on PYTHONPATH; nothing is installed here)")
    sys.exit(3)
import torch

if not torch.cuda.is_available():
    print(f"no CUDA: torch {torch.__version__} (CUDA build {torch.version.cuda}) sees no GPU")
    sys.exit(4)
print("cuda", torch.version.cuda, torch.cuda.get_device_name(0))
PY
if [ "$FAILED" -ne 0 ]; then
    note "stopping: the environment is not fit for the GPU check"
    finish
fi

# 2. The gpu-marked tests (conftest keeps CUDA visible for -m gpu).
step pytest-gpu 270 python3 -m pytest -m gpu -p no:cacheprovider -ra tests
grep -E "^(FAILED|ERROR|SKIPPED)|[0-9]+ (passed|failed|skipped)" "$LOGDIR/pytest-gpu.log" \
    | tail -n 20 | sed 's/^/    /' | tee -a "$SUMMARY"

# 3. The CUDA section of the benchmarks alone, quick sizes.
step bench-cuda 120 python3 benchmarks/run.py --only cuda --quick

finish
