#!/usr/bin/env bash
# Rewrite requirements/lock.txt, the exact versions that scripts/setup.sh installs and
# CI tests with, from pyproject.toml's ranges: the newest releases they admit today,
# with torch held at the version setup.sh installs. Needs uv (pip install uv).
# Review the diff, run the suite on the new set, then commit both (docs/install.md).
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_VERSION=${OPTINSPECT_TORCH_VERSION:-2.13.0}
# CI's interpreter and platform: the lock holds what was tested there, nothing else.
LOCK_PYTHON=${OPTINSPECT_LOCK_PYTHON:-3.11}
torch_pin=$(mktemp)
trap 'rm -f "$torch_pin"' EXIT
echo "torch==$TORCH_VERSION" >"$torch_pin"
${UV:-uv} pip compile pyproject.toml --extra test --extra plot \
    --python-version "$LOCK_PYTHON" --python-platform x86_64-manylinux_2_28 \
    --constraint "$torch_pin" --no-header --quiet \
    --output-file requirements/lock.txt
body=$(cat requirements/lock.txt)
{
    echo "# python $LOCK_PYTHON, linux x86_64: the exact versions CI passed with, installed as"
    echo "# constraints by scripts/setup.sh. Regenerate with scripts/lock.sh (docs/install.md)."
    echo "$body"
} >requirements/lock.txt
