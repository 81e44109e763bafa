#!/usr/bin/env bash
# TRL drop-in: TRL's two example commands from trl/scripts/dpo.py (full and LoRA), unchanged
# but for --max_steps and --output_dir, with Hub ids for the model and the dataset:
#   1. through the test Hub server (sdpo-hub-testserver, HF_ENDPOINT) into an empty cache,
#   2. offline (HF_HUB_OFFLINE=1) from a cache prepared by Python's huggingface_hub itself
#      (snapshot_download from the same server), so the cache is shared with Python tools,
#   3. the same run written as TRL's YAML file (its env: section sets HF_HUB_OFFLINE),
# and checks that huggingface_hub finds what sdpo downloaded (offline, local_files_only).
# A tiny model (the quickstart's random Llama with SmolLM2's tokenizer, trained one step by
# sdpo) and the quickstart's Parquet pairs stand in for Qwen2-0.5B-Instruct and
# trl-lib/ultrafeedback_binarized. Nothing here reaches the real Hub.
#
# Idempotent. huggingface_hub goes into a venv under ${SDPO_CACHE:-$HOME/.cache/sdpo-rs}.
# Usage: ci/trl-dropin.sh   (honours CARGO_TARGET_DIR; builds the debug binaries with
# `cargo test --workspace --no-run` when they are missing)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${SDPO_CACHE:-$HOME/.cache/sdpo-rs}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
VENV="$CACHE/hub-venv"
PY="$VENV/bin/python"
HUB_PIN="huggingface_hub==2.4.0"
START=$SECONDS

if ! "$PY" -c 'import huggingface_hub as h; assert h.__version__ == "2.4.0"' 2>/dev/null; then
    echo "trl-dropin: preparing $VENV ($HUB_PIN)"
    mkdir -p "$CACHE"
    python3 -m venv "$VENV"
    "$PY" -m pip install --quiet --disable-pip-version-check "$HUB_PIN"
fi

cd "$ROOT"
SDPO="$TARGET/debug/sdpo"
SERVER_BIN="$TARGET/debug/sdpo-hub-testserver"
if [ ! -x "$SDPO" ] || [ ! -x "$SERVER_BIN" ]; then
    # The binaries `cargo test --workspace` builds (a `cargo build -p` would resolve features
    # differently and rebuild burn).
    cargo test --workspace --no-run --quiet
fi

WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# --- the stand-in repositories -------------------------------------------------------------
MODEL=test-org/tiny-llama
DATASET=test-org/tiny-prefs
"$SDPO" train --config examples/quickstart/sdpo.toml --set max_steps=1 --set 'save_strategy="no"' \
    --set "output_dir=\"$WORK/seed\"" >/dev/null 2>&1
mkdir -p "$WORK/hub/models/$MODEL" "$WORK/hub/datasets/$DATASET/data"
cp "$WORK/seed"/{config.json,model.safetensors,tokenizer.json,tokenizer_config.json} "$WORK/hub/models/$MODEL/"
cp examples/quickstart/parquet/data/*.parquet "$WORK/hub/datasets/$DATASET/data/"
cat >"$WORK/hub/datasets/$DATASET/README.md" <<'EOF'
---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
  - split: test
    path: data/test-*
---
A tiny stand-in for trl-lib/ultrafeedback_binarized (the quickstart's pairs).
EOF

"$SERVER_BIN" --root "$WORK/hub" --url-file "$WORK/url" >/dev/null &
SERVER_PID=$!
for _ in $(seq 100); do [ -s "$WORK/url" ] && break; sleep 0.1; done
URL="$(cat "$WORK/url")"
echo "trl-dropin: test Hub server at $URL"

# TRL's commands from the docstring of trl/scripts/dpo.py (TRL 1.16), --max_steps 1000 -> 2 and
# --output_dir Qwen2-0.5B-DPO -> a temporary directory.
full() {
    "$SDPO" train \
        --dataset_name "$DATASET" \
        --model_name_or_path "$MODEL" \
        --learning_rate 5.0e-7 \
        --num_train_epochs 1 \
        --per_device_train_batch_size 2 \
        --max_steps 2 \
        --gradient_accumulation_steps 8 \
        --eval_strategy steps \
        --eval_steps 50 \
        --output_dir "$1" \
        --no_remove_unused_columns
}
lora() {
    "$SDPO" train \
        --dataset_name "$DATASET" \
        --model_name_or_path "$MODEL" \
        --learning_rate 5.0e-6 \
        --num_train_epochs 1 \
        --per_device_train_batch_size 2 \
        --max_steps 2 \
        --gradient_accumulation_steps 8 \
        --eval_strategy steps \
        --eval_steps 50 \
        --output_dir "$1" \
        --no_remove_unused_columns \
        --use_peft \
        --lora_r 32 \
        --lora_alpha 16
}
check() { # DIR WEIGHTS
    test -f "$1/$2"
    grep -q '"eval_loss"' "$1/metrics.jsonl"
}

# 1. Online, through the test server, into an empty cache.
export HF_ENDPOINT="$URL"
export HF_HUB_CACHE="$WORK/cache-sdpo"
unset HF_HUB_OFFLINE TRANSFORMERS_OFFLINE HF_TOKEN
full "$WORK/full-online"
check "$WORK/full-online" model.safetensors
lora "$WORK/lora-online"
check "$WORK/lora-online" adapter_model.safetensors
echo "trl-dropin: both commands ran through the test Hub server ($(( SECONDS - START )) s)"

# Python's huggingface_hub reads what sdpo cached, offline.
HF_HUB_OFFLINE=1 "$PY" - "$MODEL" "$DATASET" <<'EOF'
import sys
from huggingface_hub import scan_cache_dir, snapshot_download
model, dataset = sys.argv[1:3]
m = snapshot_download(model, local_files_only=True)
d = snapshot_download(dataset, repo_type="dataset", local_files_only=True)
info = scan_cache_dir()
repos = {(r.repo_type, r.repo_id) for r in info.repos}
assert ("model", model) in repos and ("dataset", dataset) in repos, repos
assert not info.warnings, info.warnings
print("huggingface_hub reads sdpo's cache:", m, d)
EOF

# 2. A cache prepared by huggingface_hub (from the same server), then offline with the server gone.
export HF_HUB_CACHE="$WORK/cache-python"
"$PY" - "$MODEL" "$DATASET" <<'EOF'
import sys
from huggingface_hub import snapshot_download
model, dataset = sys.argv[1:3]
print("huggingface_hub prepared", snapshot_download(model), snapshot_download(dataset, repo_type="dataset"))
EOF
kill "$SERVER_PID"
SERVER_PID=""
export HF_HUB_OFFLINE=1
export HF_ENDPOINT="http://127.0.0.1:9"
full "$WORK/full-offline" 2>&1 | tee "$WORK/full-offline.log"
grep -q "cached snapshot" "$WORK/full-offline.log"
check "$WORK/full-offline" model.safetensors
lora "$WORK/lora-offline"
check "$WORK/lora-offline" adapter_model.safetensors
echo "trl-dropin: both commands ran offline from huggingface_hub's cache ($(( SECONDS - START )) s)"

# 3. The same run as TRL's YAML (`trl dpo --config run.yaml` reads the same file).
unset HF_HUB_OFFLINE
cat >"$WORK/run.yaml" <<EOF
dataset_name: $DATASET
model_name_or_path: $MODEL
learning_rate: 5.0e-7
num_train_epochs: 1
per_device_train_batch_size: 2
max_steps: 2
gradient_accumulation_steps: 8
eval_strategy: steps
eval_steps: 50
output_dir: $WORK/yaml
remove_unused_columns: false
env:
  HF_HUB_OFFLINE: 1
EOF
"$SDPO" train --config "$WORK/run.yaml"
check "$WORK/yaml" model.safetensors
echo "trl-dropin: done in $(( SECONDS - START )) s"
