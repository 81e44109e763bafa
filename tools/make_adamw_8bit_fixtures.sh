#!/usr/bin/env bash
# Makes (or reuses) the pinned TRL venv of tools/trl-venv.sh, adds bitsandbytes 0.50.2 to it
# and writes fixtures/adamw_8bit/ with tools/make_adamw_8bit_fixtures.py: bitsandbytes' 8-bit
# AdamW on the CPU, alone on seeded gradients and inside TRL 1.16's DPOTrainer
# (`optim="adamw_8bit"`). Warm: ~20 s.
#
#   tools/make_adamw_8bit_fixtures.sh [FIXTURES_DIR]   # default: fixtures/
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="$("$ROOT/tools/trl-venv.sh")"
if ! "$PY" -c 'import bitsandbytes as b; assert b.__version__ == "0.50.2"' 2>/dev/null; then
    "$PY" -m pip install --quiet --disable-pip-version-check bitsandbytes==0.50.2 >&2
fi
HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 "$PY" "$ROOT/tools/make_adamw_8bit_fixtures.py" "$@"
