#!/usr/bin/env bash
# Writes fixtures/trl/flow.json with tools/make_trl_flow_fixture.py: when transformers 5.24's
# Trainer logs, evaluates and saves, which checkpoints save_total_limit leaves, the best
# metric / checkpoint and what load_best_model_at_end loads, from runs of the real
# Trainer.train() on a one-parameter model (CPU). The venv is tools/trl-venv.sh's (made
# idempotently; torch 2.9.0, transformers 5.24.0). Warm: ~20 s.
#
#   tools/make_trl_flow_fixture.sh [OUT_FILE]     # default fixtures/trl/flow.json
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="$("$ROOT/tools/trl-venv.sh")"
HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 "$PY" "$ROOT/tools/make_trl_flow_fixture.py" "$@"
