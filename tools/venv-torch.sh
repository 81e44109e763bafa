#!/usr/bin/env bash
# Gives the venv of the python PY torch 2.9.0 without a second multi-GB install when it can: a
# .pth file pointing at $SDPO_CACHE/torch-venv's site-packages when that venv has torch 2.9.0
# (ci/backends.sh makes it), else `pip install torch==2.9.0`. Used by the scripts that make
# Python venvs (ci/lora-peft.sh, tools/trl-venv.sh).
#   tools/venv-torch.sh PY
set -euo pipefail
PY="$1"
TORCH_VENV="${SDPO_CACHE:-$HOME/.cache/sdpo-rs}/torch-venv"
if [ -x "$TORCH_VENV/bin/python" ] &&
    "$TORCH_VENV/bin/python" -c 'import torch; assert torch.__version__.startswith("2.9.0")' 2>/dev/null; then
    TORCH_SITE="$("$TORCH_VENV/bin/python" -c 'import torch, os; print(os.path.dirname(os.path.dirname(torch.__file__)))')"
    SITE="$("$PY" -c 'import site; print(site.getsitepackages()[0])')"
    echo "$TORCH_SITE" >"$SITE/sdpo-torch-venv.pth"
else
    "$PY" -m pip install --quiet --disable-pip-version-check torch==2.9.0 >&2
fi
