#!/usr/bin/env bash
# Regenerates fixtures/hub_dataset/ (a dataset repository with README configs, and what
# `datasets` 5.2 and TRL 1.16's get_dataset load from it) with the venv of tools/trl-venv.sh.
#   tools/make_hub_dataset_fixtures.sh [OUT_DIR]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="$("$ROOT/tools/trl-venv.sh")"
CACHE_DIR="$(mktemp -d)"
trap 'rm -rf "$CACHE_DIR"' EXIT
HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_DATASETS_CACHE="$CACHE_DIR" \
    "$PY" "$ROOT/tools/make_hub_dataset_fixtures.py" "$@"
