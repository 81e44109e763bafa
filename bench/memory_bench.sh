#!/usr/bin/env bash
# Memory and speed of one SDPO training step on SmolLM2-135M-Instruct at long sequence lengths:
# sdpo-rs's plain path (autodiff through the whole forward) and its memory-bounded engine
# (per-layer recomputation, attention in query blocks, chunked LM-head log-probs), next to TRL's
# DPOTrainer (gradient checkpointing on and off), same machine, same run.
#
# Usage: bench/memory_bench.sh SMOLLM2_DIR [LENGTHS] [STEPS] [TRL_VENV]
#   SMOLLM2_DIR  made by tools/get-smollm2.sh
#   LENGTHS      space-separated sequence lengths (default "1024 2048 4096")
#   STEPS        steps per run (default 2; the first includes warm-up)
#   TRL_VENV     a venv with torch==2.9.0 transformers==5.24.0 trl==1.16.0 datasets; when
#                given, TRL runs at each length too (bench/trl_step_bench.py)
# Environment: PLAIN_MAX (default 1024): the longest length the plain path is run at (it needs
#              ~23 GB at 1024); BUDGET_MIB (default 512): the engine's memory budget.
#
# Every run is its own process under /usr/bin/time -v for its peak resident memory; 2 pairs per
# step (4 rows), fp32, live reference, flex with rayon + simd on RAYON_NUM_THREADS=2.
set -euo pipefail
DIR="$1"; LENGTHS="${2:-1024 2048 4096}"; STEPS="${3:-2}"; VENV="${4:-}"
PLAIN_MAX="${PLAIN_MAX:-1024}"; BUDGET_MIB="${BUDGET_MIB:-512}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sdpo-rs/target}"
export RAYON_NUM_THREADS="${RAYON_NUM_THREADS:-2}"
cd "$ROOT"
cargo build -q --release -p sdpo-train --features flex,sdpo-models/rayon,sdpo-models/simd \
    --example engine_step
BIN="$CARGO_TARGET_DIR/release/examples/engine_step"
TIME_LOG="$(mktemp)"
peak() { grep "Maximum resident" "$1" | awk '{printf "%.0f MiB", $6/1024}'; }
run() {
    echo "== $*"
    /usr/bin/time -v "$@" 2> "$TIME_LOG" | sed 's/^/   /'
    echo "   process peak RSS $(peak "$TIME_LOG")"
}
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(date -u +%F)"
for T in $LENGTHS; do
    run "$BIN" "$DIR" "$T" memory "$STEPS" "$BUDGET_MIB"
    if [ "$T" -le "$PLAIN_MAX" ]; then
        run "$BIN" "$DIR" "$T" plain "$STEPS"
    fi
    if [ -n "$VENV" ]; then
        for gc in on off; do
            run "$VENV/bin/python" bench/trl_step_bench.py "$DIR" "$T" "$gc" "$STEPS"
        done
    fi
done
rm -f "$TIME_LOG"
