#!/usr/bin/env bash
# Regenerates fixtures/qlora/ (bitsandbytes 4-bit quantization goldens and the QLoRA goldens of
# fixtures/README.md section 4c) on the CPU, in the venv of tools/qlora-venv.sh.
# Single-threaded (OMP_NUM_THREADS=1) so that reductions do not depend on the core count.
#   tools/make_qlora_fixtures.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$("$ROOT/tools/qlora-venv.sh")"
OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 "$PY" "$ROOT/tools/make_qlora_fixtures.py" "$ROOT/fixtures"
