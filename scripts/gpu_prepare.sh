#!/usr/bin/env bash
# Prepare the files a GPU run carries (run here, where there is network): .whl/ with this project's
# wheel (so no build backend runs on the device) and bitsandbytes 0.50.2's manylinux wheel (CUDA 13
# kernels; the device's python3 is 3.12 and has no network). .whl/ is ignored by git (.gitignore).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
mkdir -p .whl
rm -f .whl/llm_blocks_bench-*.whl
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w .whl .
ls .whl/bitsandbytes-0.50.2-*.whl >/dev/null 2>&1 || "$PY" -m pip download -q --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp --platform manylinux_2_24_x86_64 -d .whl bitsandbytes==0.50.2
ls -la .whl
