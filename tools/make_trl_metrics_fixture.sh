#!/usr/bin/env bash
# Makes the pinned TRL venv (idempotent) and writes fixtures/dpo_metrics_v1.json with
# tools/make_trl_metrics_fixture.py: TRL 1.16's DPOTrainer metrics on the sdpo_e2e batch.
# torch comes from $SDPO_CACHE/torch-venv when it already holds torch 2.9.0 (ci/backends.sh
# makes it), else from PyPI. Warm: ~15 s.
#
#   tools/make_trl_metrics_fixture.sh [FIXTURES_DIR]   # default: fixtures/
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${SDPO_CACHE:-$HOME/.cache/sdpo-rs}"
VENV="$CACHE/trl-venv"
TORCH_VENV="$CACHE/torch-venv"
PY="$VENV/bin/python"
PINS=(transformers==5.24.0 trl==1.16.0 accelerate==1.15.0 datasets==5.2.0 tokenizers==0.23.3 numpy==2.4.6)

has_packages() {
    "$PY" - <<'PY' 2>/dev/null
import torch, transformers, trl, accelerate, datasets
assert torch.__version__.split("+")[0] == "2.9.0", torch.__version__
assert transformers.__version__ == "5.24.0", transformers.__version__
assert trl.__version__ == "1.16.0", trl.__version__
PY
}

if ! has_packages; then
    echo "trl-metrics: preparing $VENV"
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
    has_packages || { echo "trl-metrics: the venv lacks the pinned packages" >&2; exit 1; }
fi
HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 "$PY" "$ROOT/tools/make_trl_metrics_fixture.py" "$@"
