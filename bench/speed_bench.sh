#!/usr/bin/env bash
# Step time and throughput of `sdpo train` next to TRL 1.16's DPOTrainer at several
# prompt:completion ratios, on the very same generated pairs, in one command (issue 12):
# SmolLM2-135M-Instruct, fp32 on the CPU, 2 pairs per step, rows of ~ROW tokens (prompt + one
# completion), nothing truncated (max_length 1024 on both sides).
#
# sdpo-rs (SDPO, q = 0.6, gradient_checkpointing off) runs three ways:
#   two-rows  shared_prompt_forward = false (TRL's concatenated forward: the prompt twice)
#   shared    shared_prompt_forward = true (the default: the prompt once, head only where used)
#   cached    shared + precompute_ref_log_probs = true (no reference forward during training;
#             TRL cannot use its cache for SDPO, whose selection needs per-token log-probs)
# TRL (sigmoid DPO, live reference) runs with its default gradient_checkpointing = true and with
# it off, at each of TRL_PRECISIONS.
#
# Usage: bench/speed_bench.sh SMOLLM2_DIR TRL_VENV [RATIOS] [STEPS] [ROW]
#   RATIOS  space-separated prompt:completion ratios (default "1:3 1:1 3:1")
#   STEPS   optimizer steps per run (default 3; the first includes warm-up and is not counted)
#   ROW     tokens of prompt + completion (default 512)
# Environment: SDPO_BIN as in bench/train_bench.sh; SDPO_ONLY=1 skips TRL; SDPO_DEVICE picks
# the backend (default flex; tch needs a binary built with --features tch and torch's lib/ on
# LD_LIBRARY_PATH); SDPO_MODES limits the sdpo-rs runs (default "two-rows shared cached");
# SDPO_PRECISION=bf16 (or fp16) trains sdpo-rs with TRL's `bf16 = true` (or `fp16`), default
# float32; TRL_PRECISIONS lists TRL's precisions (default "bf16", TRL's own default: autocast
# to bfloat16 on the CPU; "fp32" = `bf16 = False`); TRL_CHECKPOINTING (default "on off").
#
# Prints seconds per step (mean over the steps after the first) and tokens per second, where a
# pair's tokens are what TRL's two-row forward processes (prompt twice, both completions), the
# same count for every column.
set -euo pipefail
DIR="$(cd "$1" && pwd)"; VENV="$2"; RATIOS="${3:-1:3 1:1 3:1}"; STEPS="${4:-3}"; ROW="${5:-512}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sdpo-rs/target}"
export RAYON_NUM_THREADS="${RAYON_NUM_THREADS:-2}"
BIN="${SDPO_BIN:-$CARGO_TARGET_DIR/release/sdpo}"
if [ ! -x "$BIN" ]; then
    (cd "$ROOT" && cargo build -q --release -p sdpo-cli)
fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
# sdpo-rs: the mean spacing of the timestamped per-step log lines after the first (not the
# end-of-run record, which repeats the last step number with train_runtime=...).
step_seconds() {
    awk '/ step [0-9]+ epoch / && !/train_runtime=/ {t[n++]=$1}
         END { if (n < 2) { print "nan"; exit } printf "%.2f", (t[n-1]-t[0])/(n-1) }' "$1"
}
# TRL: the mean of the step times its callback prints, steps after the first.
trl_step_seconds() {
    grep -o 'step [0-9]*: [0-9.]* s' "$1" |
        awk '$2+0 > 1 {s += $3; n++} END { if (n < 1) { print "nan"; exit } printf "%.2f", s/n }'
}
stamp() { while IFS= read -r line; do printf '%s %s\n' "$(date +%s.%N)" "$line"; done; }
report() { # NAME SECONDS TOKENS_PER_STEP
    awk -v name="$1" -v s="$2" -v tok="$3" 'BEGIN {
        if (s == "nan") { printf "  %-28s FAILED\n", name; exit }
        printf "  %-28s %6.1f s/step  %6.0f tokens/s\n", name, s, tok / s }'
}
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(date -u +%F)"
echo "sdpo: $("$BIN" --version), device ${SDPO_DEVICE:-flex}, precision ${SDPO_PRECISION:-fp32}"
for ratio in $RATIOS; do
    p=${ratio%%:*}; c=${ratio##*:}
    prompt=$((ROW * p / (p + c))); completion=$((ROW - prompt))
    data="$WORK/pairs-$p-$c.jsonl"
    per_pair=$("$VENV/bin/python" "$ROOT/bench/trl_step_bench.py" "$DIR" 1024 on "$STEPS" \
        --write-data "$data" --prompt-tokens "$prompt" --completion-tokens "$completion" |
        awk '/tokens per pair/ {print $4}')
    tokens=$((2 * per_pair))
    echo "ratio $ratio: prompt ~$prompt, completions ~$completion tokens; $per_pair tokens per pair (prompt twice)"
    declare -A seconds=()
    for mode in ${SDPO_MODES:-two-rows shared cached}; do
        case $mode in
        two-rows) shared=false; cache=false ;;
        shared) shared=true; cache=false ;;
        cached) shared=true; cache=true ;;
        esac
        cat > "$WORK/run.toml" <<TOML
output_dir = "$WORK/out"
model_name_or_path = "$DIR"
train_file = "$data"
loss_type = "sdpo"
sdpo_threshold = 0.6
beta = 0.1
learning_rate = 5e-7
per_device_train_batch_size = 2
max_steps = $STEPS
logging_steps = 1
save_strategy = "no"
max_length = 1024
gradient_checkpointing = false
shared_prompt_forward = $shared
precompute_ref_log_probs = $cache
bf16 = $([ "${SDPO_PRECISION:-fp32}" = bf16 ] && echo true || echo false)
fp16 = $([ "${SDPO_PRECISION:-fp32}" = fp16 ] && echo true || echo false)
TOML
        rm -rf "$WORK/out"
        "$BIN" train --config "$WORK/run.toml" --device "${SDPO_DEVICE:-flex}" 2>&1 | stamp > "$WORK/sdpo.log" || true
        seconds[$mode]=$(step_seconds "$WORK/sdpo.log")
        report "sdpo-rs $mode" "${seconds[$mode]}" "$tokens"
        [ "${seconds[$mode]}" = nan ] && tail -n 3 "$WORK/sdpo.log"
    done
    [ "${SDPO_ONLY:-0}" = 1 ] && continue
    for precision in ${TRL_PRECISIONS:-bf16}; do
        for gc in ${TRL_CHECKPOINTING:-on off}; do
            "$VENV/bin/python" "$ROOT/bench/trl_step_bench.py" "$DIR" 1024 "$gc" "$STEPS" \
                --data "$data" --precision "$precision" 2>&1 | stamp > "$WORK/trl.log" || true
            s=$(trl_step_seconds "$WORK/trl.log")
            report "TRL 1.16 ($precision, checkpointing $gc)" "$s" "$tokens"
            [ "$s" = nan ] && tail -n 3 "$WORK/trl.log" && continue
            for mode in ${SDPO_MODES:-two-rows shared cached}; do
                awk -v a="$s" -v b="${seconds[$mode]}" -v m="$mode" -v g="$gc" -v p="$precision" 'BEGIN {
                    if (b != "nan") printf "    sdpo-rs %s throughput / TRL (%s, checkpointing %s): %.2fx\n", m, p, g, a / b }'
            done
        done
    done
done
