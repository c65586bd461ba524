#!/usr/bin/env bash
# The wheelhouse tools/gpu_checks.sh installs from on a GPU machine with no network: pappus
# itself (built here, pure Python) and the wheels the lent machines lack, for their Python
# (3.12, manylinux x86_64). Everything else (cuda-bindings, numpy, pluggy, pytest) is there.
#
#   tools/gpu_wheelhouse.sh [DIR]      (default .whl, which git ignores)
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.whl}
PY=${PY:-.venv/bin/python}
mkdir -p "$DIR"
rm -f "$DIR"/pappus-*.whl
"$PY" -m pip wheel -q --no-deps -w "$DIR" .
"$PY" -m pip download -q -d "$DIR" --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 cffi pycparser pyelftools
ls "$DIR"
