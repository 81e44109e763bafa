#!/usr/bin/env bash
# Precomputing the reference's log-probs of a model larger than half of this machine's memory:
# `sdpo precompute-ref` with `ref_layer_streaming` (one decoder layer's weights in memory at a
# time) against the reference held whole, on random-init checkpoints of real shapes written by
# bench/random_checkpoint.py (bfloat16 safetensors, sharded), the quickstart's pairs, flex.
# Prints peak RSS (GNU time's maximum resident set size), wall time and pairs per second.
#
# Usage: bench/ref_streaming.sh [SHAPES...]   (default: qwen2.5-0.5b qwen2.5-7b)
#   PAIRS=8 MAX_LENGTH=128 SDPO=... WORK=/tmp/sdpo-ref-streaming
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${SDPO_CACHE:-$HOME/.cache/sdpo-rs}"
SDPO="${SDPO:-${CARGO_TARGET_DIR:-$CACHE/target}/debug/sdpo}"
PY="${SDPO_REF_PYTHON:-$CACHE/lora-peft-venv/bin/python}"
WORK="${WORK:-/tmp/sdpo-ref-streaming}"
PAIRS="${PAIRS:-8}"
MAX_LENGTH="${MAX_LENGTH:-128}"
shapes=("$@")
[ ${#shapes[@]} -gt 0 ] || shapes=(qwen2.5-0.5b qwen2.5-7b)
mkdir -p "$WORK"
head -n "$PAIRS" "$ROOT/examples/quickstart/train.jsonl" > "$WORK/pairs.jsonl"
mem_kib=$(awk '/MemTotal/ {print $2}' /proc/meminfo)
echo "machine: $(nproc) cores, $((mem_kib / 1024 / 1024)) GiB; $PAIRS pairs, max_length $MAX_LENGTH, flex"
for shape in "${shapes[@]}"; do
    ckpt="$WORK/$shape"
    [ -f "$ckpt/config.json" ] || "$PY" "$ROOT/bench/random_checkpoint.py" "$shape" "$ckpt"
    weights=$(cat "$ckpt"/*.safetensors | wc -c)
    cat > "$WORK/run.toml" <<TOML
model_name_or_path = "$ckpt"
tokenizer_name_or_path = "$ROOT/fixtures/smollm2"
train_file = "$WORK/pairs.jsonl"
loss_type = "sdpo"
precompute_ref_log_probs = true
precompute_ref_batch_size = 2
gradient_checkpointing = true
max_length = $MAX_LENGTH
TOML
    for streaming in true false; do
        f32_bytes=$((weights * 2))
        if [ "$streaming" = false ] && [ "$f32_bytes" -gt $((mem_kib * 1024 * 3 / 4)) ]; then
            echo "$shape: in memory: does not fit (float32 weights $((f32_bytes >> 20)) MiB)"
            continue
        fi
        out="$WORK/out-$shape-$streaming"
        rm -rf "$out"
        /usr/bin/time -f "%e %M" -o "$WORK/time" "$SDPO" precompute-ref --device flex \
            --config "$WORK/run.toml" --set ref_layer_streaming="$streaming" \
            --set "output_dir=\"$out\"" > "$WORK/log" 2>&1 || { cat "$WORK/log"; exit 1; }
        read -r secs rss_kib < "$WORK/time"
        awk -v s="$shape" -v m="$streaming" -v t="$secs" -v r="$rss_kib" -v w="$weights" \
            -v p="$PAIRS" 'BEGIN {
                printf "%s: %s: %.1f s, %.3f pairs/s, peak RSS %d MiB = %.1f %% of the %d MiB of weights\n",
                    s, (m == "true" ? "layer streaming" : "in memory"), t, p / t, r / 1024,
                    100 * r * 1024 / w, w / 1048576 }'
    done
    if [ -d "$WORK/out-$shape-false" ]; then
        for f in "$WORK/out-$shape-false"/ref_logps_cache/*.safetensors; do
            cmp "$f" "$WORK/out-$shape-true/ref_logps_cache/$(basename "$f")"
        done
        echo "$shape: the streamed cache equals the in-memory one byte for byte"
    fi
done
