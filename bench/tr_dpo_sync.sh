#!/usr/bin/env bash
# TR-DPO's cost: SmolLM2-135M for 4 steps on flex with the reference synchronised after every
# step (alpha 0.5) and without, alternately, twice each; prints each run's train_runtime.
#   bench/tr_dpo_sync.sh [SDPO_BINARY]     # default: a release build of this checkout
# Needs the SmolLM2 weights (tools/get-smollm2.sh "$SDPO_CACHE/smollm2"). A binary built with
# the tch feature needs LibTorch on LD_LIBRARY_PATH (ci/backends.sh shows how).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
CACHE="${SDPO_CACHE:-$HOME/.cache/sdpo-rs}"
BIN="${1:-}"
if [ -z "$BIN" ]; then
    cargo build --release -p sdpo-cli >&2
    BIN="${CARGO_TARGET_DIR:-target}/release/sdpo"
fi
tools/get-smollm2.sh "$CACHE/smollm2" >&2
mkdir -p models
ln -sfn "$CACHE/smollm2" models/SmolLM2-135M-Instruct
for mode in plain sync plain sync; do
    extra=()
    if [ "$mode" = sync ]; then
        extra=(--set sync_ref_model=true --set ref_model_sync_steps=1 --set ref_model_mixup_alpha=0.5)
    fi
    out="$(mktemp -d)"
    "$BIN" train --device flex --config examples/smollm2/sdpo.toml --set max_steps=4 \
        --set 'save_strategy="no"' --set 'eval_strategy="no"' --set "output_dir=\"$out\"" \
        "${extra[@]}" >"$out/log" 2>&1
    echo "$mode $(grep -o 'train_runtime=[0-9.]*' "$out/log")"
    rm -rf "$out"
done
