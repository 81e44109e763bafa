#!/usr/bin/env bash
# Makes (idempotently) the Python venv of the TRL 1.16 oracles and baselines of sdpo-data and
# prints its python: tools/make_chat_template_fixtures.sh, tools/make_hub_dataset_fixtures.sh,
# bench/data_prepare_bench.sh. Pinned: transformers 5.24.0, TRL 1.16.0, datasets 5.2.0,
# Jinja2 3.1.6, accelerate 1.15.0. torch 2.9.0 is taken from $SDPO_CACHE/torch-venv when that
# venv has it (ci/backends.sh makes it), else installed from PyPI.
#   PY="$(tools/trl-venv.sh)"
set -euo pipefail
CACHE="${SDPO_CACHE:-$HOME/.cache/sdpo-rs}"
VENV="${SDPO_TRL_VENV:-$CACHE/trl-venv}"
PY="$VENV/bin/python"
has_packages() {
    "$PY" - <<'PYEOF' 2>/dev/null
import datasets, jinja2, torch, transformers, trl
assert transformers.__version__ == "5.24.0", transformers.__version__
assert trl.__version__ == "1.16.0", trl.__version__
assert datasets.__version__ == "5.2.0", datasets.__version__
assert jinja2.__version__ == "3.1.6", jinja2.__version__
assert torch.__version__.split("+")[0] == "2.9.0", torch.__version__
PYEOF
}
if ! has_packages; then
    echo "trl-venv: preparing $VENV" >&2
    mkdir -p "$CACHE"
    [ -x "$PY" ] || python3 -m venv "$VENV"
    SDPO_CACHE="$CACHE" "$(dirname "$0")/venv-torch.sh" "$PY"
    "$PY" -m pip install --quiet --disable-pip-version-check transformers==5.24.0 trl==1.16.0 \
        datasets==5.2.0 jinja2==3.1.6 accelerate==1.15.0 >&2
    has_packages || { echo "trl-venv: the venv lacks the pinned packages" >&2; exit 1; }
fi
echo "$PY"
