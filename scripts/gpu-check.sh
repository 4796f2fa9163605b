#!/usr/bin/env bash
# The GPU check: one run on a CUDA machine that leaves its evidence, in under 5 minutes.
#
#   bash scripts/gpu-check.sh OUTDIR               # on the CUDA machine: docs/gpu-check.md
#   bash scripts/gpu-check.sh --rehearse OUTDIR    # on a CPU: every part that needs no CUDA
#
# Options, before OUTDIR:
#   --wheels DIR         the wheels to install (default .whl; rehearsal: a small one built here)
#   --only STEP,...      run only these steps
#   --cap STEP=SECONDS   another time cap for one step (say, a longer pytest-gpu on a retry)
#   --budget SECONDS     the whole check's cap (default 300); no step starts past it
#
# Steps, each under its cap, each logged to OUTDIR/STEP.log:
#   install      pip install --no-index --no-deps --target SITE WHEELS/*.whl (those for
#                this Python); SITE, a temporary folder, comes second on PYTHONPATH
#   environment  every package's version and path against pyproject's minimums; the
#                bitsandbytes library loaded, one int8 matmul and one NF4 round trip;
#                the Triton statistics kernel against eager, with its compile time
#   pytest-gpu   pytest -m gpu on tests/test_fused.py and tests/test_gpu.py alone
#   bench-cuda   benchmarks/run.py --only cuda at the opt-1.3b shape
# OUTDIR gets at most 8 files: summary.txt (its first line PASS, FAIL or INCOMPLETE, and it
# is rewritten before each step, so a check stopped from outside still leaves one),
# junit.xml, bench-cuda.json and the 4 logs. A failed or timed-out step puts the tail of
# its log in the summary, and the next steps still run (except after "no CUDA").
# Exit status: 0 when everything passed, 1 otherwise, 2 for a usage error. The
# python3 used is $PYTHON when set. Nothing is downloaded.
set -u

STEPS=(install environment pytest-gpu bench-cuda)
declare -A CAP=([install]=20 [environment]=45 [pytest-gpu]=150 [bench-cuda]=75)
PER_TEST=90    # pytest-timeout's cap on one test (its setup included), where installed
DUMP_TEST=60   # pytest's faulthandler dumps the stacks of a test running this long
RESERVE=10     # seconds of the budget kept for writing the summary

fail_usage() {
    echo "Error: $1" >&2
    exit 2
}

REHEARSE=0 WHEELS="" ONLY="" BUDGET=300 OUTDIR=""
while [ $# -gt 0 ]; do
    case $1 in
        --rehearse) REHEARSE=1 ;;
        --wheels | --only | --cap | --budget)
            [ $# -ge 2 ] || fail_usage "$1 needs a value"
            case $1 in
                --wheels) WHEELS=$2 ;;
                --only) ONLY=,$2, ;;
                --budget) BUDGET=$2 ;;
                --cap)
                    name=${2%%=*} value=${2#*=}
                    [ -n "${CAP[$name]+set}" ] || fail_usage "unknown step '$name' in --cap: use ${STEPS[*]}"
                    [[ $value =~ ^[1-9][0-9]*$ ]] || fail_usage "--cap $2: give STEP=SECONDS, at least 1"
                    CAP[$name]=$value
                    ;;
            esac
            shift
            ;;
        -h | --help)
            sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        -*) fail_usage "unknown option $1: see bash scripts/gpu-check.sh --help" ;;
        *)
            [ -z "$OUTDIR" ] || fail_usage "one OUTDIR only, got '$OUTDIR' and '$1'"
            OUTDIR=$1
            ;;
    esac
    shift
done
[ -n "$OUTDIR" ] || fail_usage "no OUTDIR: bash scripts/gpu-check.sh [--rehearse] OUTDIR"
[[ $BUDGET =~ ^[0-9]+$ ]] || fail_usage "--budget $BUDGET: give whole seconds"
for name in ${ONLY//,/ }; do
    [ -n "${CAP[$name]+set}" ] || fail_usage "unknown step '$name' in --only: use ${STEPS[*]}"
done
mkdir -p "$OUTDIR" 2>/dev/null || fail_usage "cannot create $OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 2
PY=${PYTHON:-python3}
MODE=$([ $REHEARSE -eq 1 ] && echo "rehearsal on the CPU" || echo "CUDA run")
DEVICE=$([ $REHEARSE -eq 1 ] && echo cpu || echo cuda)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX") || exit 1
SITE=$WORK/site
SAMPLER=""
rm -f "$OUTDIR"/{summary.txt,junit.xml,bench-cuda.json} "$OUTDIR"/{install,environment,pytest-gpu,bench-cuda}.log
: >"$WORK/steps"
: >"$WORK/failures"

# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
    stop_sampler
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'finish "stopped by SIGTERM"' TERM
trap 'finish "stopped by SIGINT"' INT

export PYTHONUNBUFFERED=1 PYTHONFAULTHANDLER=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export TRITON_CACHE_DIR=$WORK/triton # empty: the environment step times a real compile
export PYTHONPATH="$ROOT/src:$SITE${PYTHONPATH:+:$PYTHONPATH}"
FAILED=0 CURRENT="" STOPPED=""

selected() { [ -z "$ONLY" ] || [[ $ONLY == *",$1,"* ]]; }

gpu_line() {
    if ! command -v nvidia-smi >/dev/null 2>&1; then
        if [ -r /proc/driver/nvidia/version ]; then
            echo "no nvidia-smi; $(head -n 1 /proc/driver/nvidia/version)"
        else
            echo "none found (no nvidia-smi, no NVIDIA driver)"
        fi
        return
    fi
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 |
        head -n 2 | paste -sd ';' | sed 's/^/nvidia-smi: /; s/, / driver /'
}

# Whole-GPU memory in use, sampled every second while a step runs (CUDA context included).
start_sampler() {
    SAMPLES=$WORK/$1.gpu-memory
    : >"$SAMPLES"
    command -v nvidia-smi >/dev/null 2>&1 || return 0
    (while :; do
        nvidia-smi -i 0 --query-gpu=memory.used --format=csv,noheader,nounits >>"$SAMPLES" 2>/dev/null
        sleep 1
    done) &
    SAMPLER=$!
}

stop_sampler() {
    if [ -n "$SAMPLER" ]; then
        kill "$SAMPLER" 2>/dev/null
        wait "$SAMPLER" 2>/dev/null
        SAMPLER=""
    fi
}

peak_memory() {
    local peak
    peak=$(grep -E '^ *[0-9]+ *$' "$SAMPLES" 2>/dev/null | sort -n | tail -n 1 | tr -d ' ')
    if [ -n "$peak" ]; then echo "$peak MiB"; else echo "n/a"; fi
}

# write_summary HEADLINE: summary.txt from what is known so far.
write_summary() {
    local name
    {
        echo "$1"
        echo "GPU: $GPU"
        [ -s "$WORK/pytest-gpu.section" ] && head -n 1 "$WORK/pytest-gpu.section"
        echo "gpu-check, $MODE, $(date -u '+%Y-%m-%d %H:%M UTC'), $SECONDS s of a $BUDGET s budget, in $ROOT"
        echo
        printf '%-12s %-30s %6s  %s\n' step result seconds "peak GPU memory used (nvidia-smi)"
        cat "$WORK/steps"
        for name in environment pytest-gpu bench-cuda; do
            [ -s "$WORK/$name.section" ] && echo && cat "$WORK/$name.section"
        done
        if [ -s "$WORK/failures" ]; then
            echo
            echo "failures:"
            cat "$WORK/failures"
        fi
    } >"$OUTDIR/summary.txt.part" && mv "$OUTDIR/summary.txt.part" "$OUTDIR/summary.txt"
}

# record NAME RESULT SECONDS PEAK
record() {
    printf '%-12s %-30s %6s  %s\n' "$1" "$2" "$3" "$4" >>"$WORK/steps"
}

# failed NAME WHY: the check fails; the summary gets WHY and the tail of NAME's log.
failed() {
    FAILED=1
    {
        echo "$1: $2; the last lines of $1.log:"
        tail -n 40 "$OUTDIR/$1.log" 2>/dev/null | cut -c 1-300 | sed 's/^/    | /'
    } >>"$WORK/failures"
}

# A log of more than 1 MiB keeps its head and tail: a runaway log must not cost the rest.
trim_log() {
    local log=$1
    if [ "$(wc -c <"$log")" -gt 1048576 ]; then
        { head -c 200000 "$log"; echo; echo "[... trimmed by gpu-check ...]"; tail -c 800000 "$log"; } >"$log.t"
        mv "$log.t" "$log"
    fi
}

# run_step NAME COMMAND...: COMMAND under NAME's cap (within the budget), logged; sets RC.
run_step() {
    local name=$1 cap=${CAP[$1]} left=$((BUDGET - SECONDS - RESERVE)) limit start rc spent
    shift
    RC=""
    selected "$name" || return 0
    if [ -n "$STOPPED" ]; then
        record "$name" "not run" - -
        echo "$name: not run: $STOPPED" >>"$WORK/failures"
        return 0
    fi
    if [ "$left" -lt 5 ]; then
        record "$name" "not run: budget spent" - -
        FAILED=1
        echo "$name: not run: the check's $BUDGET s budget is spent" >>"$WORK/failures"
        return 0
    fi
    [ "$cap" -le "$left" ] || cap=$left
    CURRENT=$name
    write_summary "INCOMPLETE: the check stopped during $name (killed from outside?)"
    { echo "\$ $*"; echo "# cap $cap s, started $(date -u '+%H:%M:%S UTC')"; } >"$OUTDIR/$name.log"
    start_sampler "$name"
    start=$SECONDS
    # SIGINT 5 s before the cap (SIGKILL at it): Python prints where it was, pytest its
    # summary and junit.xml; 5 s before that, the stacks of every thread are dumped.
    limit=$((cap > 10 ? cap - 5 : cap))
    GPU_CHECK_DUMP_AFTER=$((limit - 5)) timeout -s INT -k 5 "$limit" "$@" >>"$OUTDIR/$name.log" 2>&1
    rc=$?
    spent=$((SECONDS - start))
    stop_sampler
    trim_log "$OUTDIR/$name.log"
    CURRENT=""
    RC=$rc
    case $rc in
        0) record "$name" ok "$spent" "$(peak_memory)" ;;
        124 | 137)
            record "$name" "TIMED OUT (cap $cap s)" "$spent" "$(peak_memory)"
            failed "$name" "timed out after $spent s (cap $cap s)"
            ;;
        *)
            record "$name" "FAILED (exit $rc)" "$spent" "$(peak_memory)"
            failed "$name" "failed with exit $rc"
            ;;
    esac
}

# summarize NAME COMMAND...: a step's summary section, from its JUnit or JSON file.
summarize() {
    local name=$1 rc
    shift
    selected "$name" && [ -z "$STOPPED" ] || return 0
    timeout 30 "$PY" scripts/gpu_check.py "$@" --section "$WORK/$name.section" >>"$OUTDIR/$name.log" 2>&1
    rc=$?
    if [ $rc -ne 0 ] && [ "$RC" = 0 ]; then
        failed "$name" "passed, but its evidence shows a problem (exit $rc of the summary)"
        sed -i "s/^\($name \+\)ok /\1PROBLEM /" "$WORK/steps"
    fi
}

# finish [WHY]: the final summary and the exit status; WHY when stopped by a signal.
finish() {
    stop_sampler
    local headline names why=${1:-}
    if [ -n "$why" ] && [ -n "$CURRENT" ]; then
        record "$CURRENT" "STOPPED ($why)" "-" "-"
        failed "$CURRENT" "$why"
    elif [ -n "$why" ]; then
        FAILED=1
        echo "the check: $why" >>"$WORK/failures"
    fi
    names=$(awk '{print $1}' "$WORK/steps" | paste -sd ' ')
    if [ "$FAILED" -eq 0 ]; then
        headline="PASS: every step passed ($names)"
        [ $REHEARSE -eq 1 ] && headline="$headline; a rehearsal on the CPU: the GPU tests were skipped"
    else
        names=$(grep -vE '^[^ ]+ +ok ' "$WORK/steps" | awk '{print $1}' | paste -sd ' ')
        headline="FAIL: ${names:-the check} (see failures below)"
    fi
    write_summary "$headline"
    echo "----- $OUTDIR/summary.txt -----"
    cat "$OUTDIR/summary.txt"
    exit "$FAILED"
}

GPU=$(gpu_line)
echo "gpu-check: $MODE, writing to $OUTDIR" >&2

# 1. The carried wheels, into a temporary folder on PYTHONPATH.
if selected install; then
    if [ $REHEARSE -eq 1 ] && [ -z "$WHEELS" ]; then
        WHEELS=$WORK/wheels
        if ! wheel=$("$PY" scripts/gpu_check.py fake-wheel "$WHEELS") ||
            ! "$PY" scripts/gpu_check.py slim-wheel "$wheel" --keep cuda130 >&2; then
            echo "Error: could not build the rehearsal's wheel" >&2
            exit 1
        fi
    fi
    run_step install "$PY" scripts/gpu_check.py install --target "$SITE" "${WHEELS:-$ROOT/.whl}"
fi

# 2. What is installed, and whether bitsandbytes and Triton work on this device.
run_step environment "$PY" scripts/gpu_check.py environment --device "$DEVICE" --site "$SITE" \
    --section "$WORK/environment.section"
if [ "$RC" = 4 ]; then
    STOPPED="the environment step found no CUDA or no torch"
fi

# 3. The gpu tests, from the GPU files alone: an import error in a CPU-only test module
# (other Python, transformers or typer versions) cannot stop the session. The Triton
# kernel's tests go first: quick, and never run on a GPU before.
PYTEST=(-m pytest -m gpu -p no:cacheprovider -v -rA --durations=15 --color=no
    -o "faulthandler_timeout=$DUMP_TEST" --junitxml="$OUTDIR/junit.xml" --basetemp="$WORK/pytest")
if "$PY" -c "import pytest_timeout" >/dev/null 2>&1; then
    PYTEST+=("--timeout=$PER_TEST")
fi
run_step pytest-gpu "$PY" "${PYTEST[@]}" tests/test_fused.py tests/test_gpu.py
REHEARSAL=()
[ $REHEARSE -eq 0 ] || REHEARSAL=(--rehearsal)
summarize pytest-gpu pytest-section --junit "$OUTDIR/junit.xml" --log "$OUTDIR/pytest-gpu.log" \
    ${REHEARSAL[@]+"${REHEARSAL[@]}"}

# 4. The CUDA benchmark at the opt-1.3b shape (the rehearsal: the small shape on the CPU).
if [ $REHEARSE -eq 1 ]; then
    BENCH=(--only cuda --quick --device cpu --tokens 8)
else
    BENCH=(--only cuda --repeats 3)
fi
run_step bench-cuda "$PY" scripts/gpu_check.py watch benchmarks/run.py "${BENCH[@]}" \
    --json "$OUTDIR/bench-cuda.json"
summarize bench-cuda bench-section --json "$OUTDIR/bench-cuda.json" ${REHEARSAL[@]+"${REHEARSAL[@]}"}

finish ""
