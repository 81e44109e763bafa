#!/usr/bin/env bash
# Makes the pinned TRL venv (idempotent) and writes fixtures/trl/ (keys.json, schedules.json)
# with tools/make_trl_fixtures.py: TRL 1.16's configuration keys and transformers 5.24's
# learning-rate schedules. torch is reused from $SDPO_CACHE/torch-venv when it has 2.9.0 (CI's
# tch stage makes it), else installed. Cold: ~2 min without torch's download; warm: ~10 s.
#
#   tools/make_trl_fixtures.sh [OUT_DIR]     # default fixtures/trl
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${SDPO_CACHE:-$HOME/.cache/sdpo-rs}"
VENV="$CACHE/trl-venv"
PY="$VENV/bin/python"
TORCH_VENV="$CACHE/torch-venv"
PINS=(transformers==5.24.0 trl==1.16.0 accelerate==1.15.0 datasets==5.2.0)
ready() {
    "$PY" - <<'PYEOF' 2>/dev/null
import torch, transformers, trl
assert trl.__version__ == "1.16.0" and transformers.__version__ == "5.24.0"
assert torch.__version__.split("+")[0] == "2.9.0"
PYEOF
}
if ! ready; then
    mkdir -p "$CACHE"
    [ -x "$PY" ] || python3 -m venv "$VENV"
    if [ -x "$TORCH_VENV/bin/python" ] &&
        "$TORCH_VENV/bin/python" -c 'import torch; assert torch.__version__.startswith("2.9.0")' 2>/dev/null; then
        TORCH_SITE="$("$TORCH_VENV/bin/python" -c 'import torch, os; print(os.path.dirname(os.path.dirname(torch.__file__)))')"
        SITE="$("$PY" -c 'import site; print(site.getsitepackages()[0])')"
        echo "$TORCH_SITE" >"$SITE/sdpo-torch-venv.pth"
    else
        "$PY" -m pip install --quiet torch==2.9.0
    fi
    "$PY" -m pip install --quiet --disable-pip-version-check "${PINS[@]}"
    ready || { echo "make_trl_fixtures: the venv lacks the pinned packages" >&2; exit 1; }
fi
"$PY" "$ROOT/tools/make_trl_fixtures.py" "${1:-$ROOT/fixtures/trl}"
