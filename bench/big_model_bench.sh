#!/usr/bin/env bash
# Memory and speed at the sizes people train, without downloading anything: random-init
# checkpoints of Qwen2.5-0.5B's and Qwen2.5-1.5B's published shapes (bench/random_checkpoint.py),
# SDPO (sigmoid DPO on TRL's side, which has no SDPO), 2 pairs of ~512-token rows per step,
# gradient checkpointing on both sides, float32 compute; `sdpo train` (flex) next to TRL 1.16
# (+ PEFT 0.21.2, + bitsandbytes 0.50.2) on the same pairs. Each run is its own process under
# /usr/bin/time for its peak resident memory.
#
# Usage: bench/big_model_bench.sh [SHAPES...]   (default: qwen2.5-0.5b qwen2.5-1.5b)
#   MODE=qlora (default): LoRA r 16 all-linear on an NF4 double-quantized base
#   MODE=lora: LoRA r 16 all-linear on the float base
#   MODE=full: full fine-tuning with AdamW (`adamw_torch`), the reference a float32 copy
#   MODE=full_8bit: full fine-tuning with bitsandbytes' 8-bit AdamW (`adamw_8bit`) on both sides
#   STEPS=2 SEQ=512 WORK=/tmp/sdpo-big-bench SDPO=... TRL_VENV=... (no TRL side when unset)
#   (measure flex rows with the default release build, `cargo build --release -p sdpo-cli`: a
#   binary linked with LibTorch, `--features tch`, holds ~490 MB more from its start)
#   DTYPE=float32|bfloat16: sdpo-rs' `dtype` (with adapters, bfloat16 holds the frozen base in
#   bfloat16; TRL's side keeps it float32, as PEFT's prepare_model_for_kbit_training does;
#   without adapters (MODE=full, full_8bit) the trained weights, gradients and AdamW states are
#   bfloat16 on both sides: TRL loads the model with dtype=torch.bfloat16)
#   DEVICE=flex|tch: sdpo-rs' backend; PRECISION=fp32|bf16: `bf16` on both sides (products in
#   bfloat16; flex warns and stays float32)
#   BUDGET=512: sdpo-rs' memory_budget_mib (the engine's working budget per attention block or
#   head chunk)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${SDPO_CACHE:-$HOME/.cache/sdpo-rs}"
SDPO="${SDPO:-${CARGO_TARGET_DIR:-$CACHE/target}/debug/sdpo}"
PY="${SDPO_BENCH_PYTHON:-$CACHE/lora-peft-venv/bin/python}"
WORK="${WORK:-/tmp/sdpo-big-bench}"
MODE="${MODE:-qlora}"
STEPS="${STEPS:-2}"
SEQ="${SEQ:-512}"
TRL_VENV="${TRL_VENV:-}"
DTYPE="${DTYPE:-float32}"
BUDGET="${BUDGET:-512}"
DEVICE="${DEVICE:-flex}"
PRECISION="${PRECISION:-fp32}"
trl_model_dtype=float32
case "$MODE" in full | full_8bit) trl_model_dtype="$DTYPE" ;; esac
shapes=("$@")
[ ${#shapes[@]} -gt 0 ] || shapes=(qwen2.5-0.5b qwen2.5-1.5b)
mkdir -p "$WORK"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(date -u +%FT%TZ); $STEPS steps of 2 pairs, max_length $SEQ"
for shape in "${shapes[@]}"; do
    ckpt="$WORK/$shape"
    if [ ! -f "$ckpt/config.json" ]; then
        "$PY" "$ROOT/bench/random_checkpoint.py" "$shape" "$ckpt"
        cp "$ROOT"/fixtures/smollm2/tokenizer*.json "$ckpt/"
    fi
    pairs="$WORK/pairs-$SEQ.jsonl"
    [ -f "$pairs" ] || "$PY" - "$pairs" "$SEQ" "$STEPS" <<'PYEOF'
import json, random, sys
out, seq, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(0)
vocab = "the of and to in is was for on as with by at from this that which model data train".split()
text = lambda n: " ".join(rng.choice(vocab) for _ in range(n))
with open(out, "w") as f:
    for _ in range(2 * steps):
        f.write(json.dumps({"prompt": text(seq // 4), "chosen": text(seq), "rejected": text(seq)}) + "\n")
PYEOF
    out="$WORK/out-$MODE-$shape"
    rm -rf "$out"
    case "$MODE" in
        qlora) mode_keys=$'use_peft = true\nlora_target_modules = "all-linear"\nload_in_4bit = true\nbnb_4bit_quant_type = "nf4"\nbnb_4bit_use_double_quant = true'
               trl_flags=(--qlora); label="QLoRA nf4+dq" ;;
        lora) mode_keys=$'use_peft = true\nlora_target_modules = "all-linear"'
              trl_flags=(--lora); label="LoRA r16 all-linear" ;;
        full) mode_keys='optim = "adamw_torch"'; trl_flags=(--optim adamw_torch); label="full fine-tuning, AdamW" ;;
        full_8bit) mode_keys='optim = "adamw_8bit"'; trl_flags=(--optim adamw_8bit); label="full fine-tuning, 8-bit AdamW" ;;
        *) echo "MODE must be qlora, lora, full or full_8bit, not $MODE" >&2; exit 2 ;;
    esac
    cat > "$WORK/run.toml" <<TOML
model_name_or_path = "$ckpt"
train_file = "$pairs"
loss_type = "sdpo"
$mode_keys
dtype = "$DTYPE"
bf16 = $([ "$PRECISION" = bf16 ] && echo true || echo false)
gradient_checkpointing = true
memory_budget_mib = $BUDGET
per_device_train_batch_size = 2
max_length = $SEQ
max_steps = $STEPS
logging_steps = 1
save_strategy = "no"
learning_rate = 5e-7
output_dir = "$out"
TOML
    start=$(date +%s.%N)
    /usr/bin/time -f "%e %M" -o "$WORK/time" "$SDPO" train --device "$DEVICE" --config "$WORK/run.toml" \
        > "$WORK/log-$MODE-$shape" 2>&1 || { tail -20 "$WORK/log-$MODE-$shape"; exit 1; }
    read -r secs rss_kib < "$WORK/time"
    runtime=$(grep -o '"train_runtime":[0-9.e+-]*' "$out/metrics.jsonl" | tail -1 | cut -d: -f2)
    echo "$shape sdpo-rs $label, dtype $DTYPE, $PRECISION, memory_budget_mib $BUDGET ($DEVICE): peak RSS $((rss_kib / 1024)) MiB, $secs s in all, train_runtime $runtime s for $STEPS steps"
    if [ -n "$TRL_VENV" ]; then
        /usr/bin/time -f "%e %M" -o "$WORK/time" "$TRL_VENV/bin/python" "$ROOT/bench/trl_step_bench.py" \
            "$ckpt" "$SEQ" on "$STEPS" --data "$pairs" "${trl_flags[@]}" --precision "$PRECISION" --model-dtype "$trl_model_dtype" \
            > "$WORK/trl-$MODE-$shape" 2>&1 || { tail -20 "$WORK/trl-$MODE-$shape"; exit 1; }
        read -r secs rss_kib < "$WORK/time"
        echo "$shape TRL $label, model dtype $trl_model_dtype, $PRECISION: peak RSS $((rss_kib / 1024)) MiB, $secs s in all; $(grep -E '^step' "$WORK/trl-$MODE-$shape" | tr '\n' ' ')"
    fi
done
