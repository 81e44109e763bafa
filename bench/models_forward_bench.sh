#!/usr/bin/env bash
# SmolLM2-135M forward and forward+backward throughput: burn-flex next to PyTorch, same run.
#
# Usage: bench/models_forward_bench.sh SMOLLM2_DIR TORCH_VENV [iterations]
#   SMOLLM2_DIR  made by tools/get-smollm2.sh
#   TORCH_VENV   a venv with torch==2.9.0 and transformers==5.24.0
# Each mode runs in its own process under /usr/bin/time -v for its peak resident memory.
set -euo pipefail
DIR="$1"; VENV="$2"; N="${3:-3}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sdpo-rs/target}"
export RAYON_NUM_THREADS=2
cd "$ROOT"
cargo bench -q -p sdpo-models --features flex,rayon,simd --bench models_forward --no-run
BIN=$(ls -t "$CARGO_TARGET_DIR"/release/deps/models_forward-* | grep -v '\.d$' | head -1)
peak() { grep "Maximum resident" "$1" | awk '{printf "%.0f MiB", $6/1024}'; }
for mode in forward backward; do
    SDPO_SMOLLM2_DIR="$DIR" /usr/bin/time -v "$BIN" "$mode" "$N" 2> /tmp/models_bench_rust.time
    echo "  peak RSS $(peak /tmp/models_bench_rust.time)"
    /usr/bin/time -v "$VENV/bin/python" bench/models_forward_bench.py "$DIR" "$mode" "$N" \
        2> /tmp/models_bench_torch.time
    echo "  peak RSS $(peak /tmp/models_bench_torch.time)"
done
