#!/usr/bin/env bash
# Makes (or reuses) the pinned TRL venv of tools/trl-venv.sh (torch 2.9.0, transformers 5.24.0,
# trl 1.16.0) and writes fixtures/trl_sync/ with tools/make_trl_sync_fixture.py: TR-DPO
# (`sync_ref_model`) as TRL 1.16's own DPOTrainer runs it, six steps with and without the
# reference sync, on the tiny Llama of fixtures/models/llama. Warm: ~15 s.
#
#   tools/make_trl_sync_fixture.sh [FIXTURES_DIR]   # default: fixtures/
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="$("$ROOT/tools/trl-venv.sh")"
HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 "$PY" "$ROOT/tools/make_trl_sync_fixture.py" "$@"
