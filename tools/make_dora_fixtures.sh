#!/usr/bin/env bash
# Regenerates fixtures/dora/ (PEFT 0.21 DoRA adapters and goldens, fixtures/README.md section 4d)
# on the CPU, in the venv of tools/qlora-venv.sh. Single-threaded, as the QLoRA goldens.
#   tools/make_dora_fixtures.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$("$ROOT/tools/qlora-venv.sh")"
OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 "$PY" "$ROOT/tools/make_dora_fixtures.py" "$ROOT/fixtures"
