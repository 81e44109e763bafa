#!/usr/bin/env bash
# Makes the pinned pyarrow/datasets venv (idempotent) and writes fixtures/arrow/ and the
# Parquet/Arrow cases of sdpo-data/tests/bad_inputs/ with tools/make_arrow_fixtures.py.
# The same venv runs bench/data_arrow_bench.py. Cold: ~1 min (PyPI wheels); warm: ~5 s.
#
#   tools/make_arrow_fixtures.sh            # regenerate the fixtures
#   tools/make_arrow_fixtures.sh --venv     # only make the venv, print its python
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${SDPO_CACHE:-$HOME/.cache/sdpo-rs}/arrow-venv"
PINS=(pyarrow==25.0.1 datasets==5.0.1 tokenizers==0.22.2 jinja2==3.1.6 numpy==2.4.6)
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import pyarrow, datasets, tokenizers, jinja2, numpy' 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "${PINS[@]}"
fi
if [ "${1:-}" = "--venv" ]; then
    echo "$VENV/bin/python"
    exit 0
fi
HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 HF_DATASETS_CACHE="${TMPDIR:-/tmp}/sdpo-arrow-hf-cache" \
    "$VENV/bin/python" "$ROOT/tools/make_arrow_fixtures.py"
