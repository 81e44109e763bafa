#!/usr/bin/env bash
# Regenerates fixtures/token_methods.json (token-level preference methods of issue 32: ConfPO,
# SePO, TIS-DPO, critical-token DPO, TGDPO; fixtures/README.md section 15) from the equations of
# tools/token-methods-spec.md, in float64 on the CPU, single-threaded. Makes (idempotently) a venv
# with torch 2.9.0 under $SDPO_CACHE/token-methods-venv (tools/venv-torch.sh links the torch of
# $SDPO_CACHE/torch-venv when it has 2.9.0). Deterministic: a rerun writes the same bytes.
#   tools/make_token_method_fixtures.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${SDPO_CACHE:-$HOME/.cache/sdpo-rs}"
VENV="$CACHE/token-methods-venv"
PY="$VENV/bin/python"
has_torch() {
    "$PY" -c 'import torch; assert torch.__version__.split("+")[0] == "2.9.0", torch.__version__' 2>/dev/null
}
if ! has_torch; then
    echo "token-methods-venv: preparing $VENV" >&2
    mkdir -p "$CACHE"
    [ -x "$PY" ] || python3 -m venv "$VENV"
    SDPO_CACHE="$CACHE" "$ROOT/tools/venv-torch.sh" "$PY"
    has_torch || { echo "token-methods-venv: no torch 2.9.0 in $VENV" >&2; exit 1; }
fi
OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 "$PY" "$ROOT/tools/make_token_method_fixtures.py" \
    "$ROOT/fixtures/token_methods.json"
