#!/usr/bin/env bash
# Regenerates the long-context RoPE fixtures (fixtures/models/{qwen3_rope_yarn,
# phi3_rope_longrope,phi3_rope_longrope_short}) with transformers 5.24.0 in the TRL venv.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SDPO_CACHE:-$HOME/.cache/sdpo-rs}/trl-venv"
[ -x "$VENV/bin/python" ] || bash "$ROOT/tools/trl-venv.sh"
"$VENV/bin/python" "$ROOT/tools/make_rope_fixtures.py" "$ROOT/fixtures"
