#!/usr/bin/env bash
# The pinned bitsandbytes + PEFT stack of the QLoRA and DoRA fixture generators
# (tools/make_qlora_fixtures.sh, tools/make_dora_fixtures.sh). Idempotent venv at
# ${SDPO_CACHE:-$HOME/.cache/sdpo-rs}/qlora-venv: bitsandbytes 0.50.2, transformers 5.24.0,
# peft 0.21.2, accelerate 1.15.0, safetensors, numpy; torch 2.9.0 is taken from
# $SDPO_CACHE/torch-venv when that venv has it (tools/venv-torch.sh), else installed from PyPI.
# Prints the venv's python on stdout (progress goes to stderr).
#   PY="$(tools/qlora-venv.sh)"
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${SDPO_CACHE:-$HOME/.cache/sdpo-rs}"
VENV="$CACHE/qlora-venv"
PY="$VENV/bin/python"
has_packages() {
    "$PY" - <<'PYEOF' 2>/dev/null
import accelerate, bitsandbytes, numpy, peft, safetensors, torch, transformers
assert bitsandbytes.__version__ == "0.50.2", bitsandbytes.__version__
assert transformers.__version__ == "5.24.0", transformers.__version__
assert peft.__version__ == "0.21.2", peft.__version__
assert accelerate.__version__ == "1.15.0", accelerate.__version__
assert torch.__version__.split("+")[0] == "2.9.0", torch.__version__
PYEOF
}
if ! has_packages; then
    echo "qlora-venv: preparing $VENV" >&2
    mkdir -p "$CACHE"
    [ -x "$PY" ] || python3 -m venv "$VENV"
    SDPO_CACHE="$CACHE" "$ROOT/tools/venv-torch.sh" "$PY" >&2
    "$PY" -m pip install --quiet --disable-pip-version-check transformers==5.24.0 peft==0.21.2 \
        accelerate==1.15.0 safetensors bitsandbytes==0.50.2 numpy >&2
    has_packages || { echo "qlora-venv: the venv lacks the pinned packages" >&2; exit 1; }
fi
echo "$PY"
