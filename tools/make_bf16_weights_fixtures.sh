#!/usr/bin/env bash
# Makes (or reuses) the pinned TRL venv of tools/trl-venv.sh and writes fixtures/bf16_weights/
# with tools/make_bf16_weights_fixtures.py: PyTorch's fused AdamW on bfloat16 parameters, alone
# on seeded gradients and inside TRL 1.16's DPOTrainer on a model loaded in bfloat16. Warm: ~15 s.
#
#   tools/make_bf16_weights_fixtures.sh [FIXTURES_DIR]   # default: fixtures/
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="$("$ROOT/tools/trl-venv.sh")"
HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 "$PY" "$ROOT/tools/make_bf16_weights_fixtures.py" "$@"
