#!/usr/bin/env bash
# Seconds per optimizer step and peak memory of `sdpo train` next to TRL 1.16's DPOTrainer, on
# the very same generated pairs, in one command: SmolLM2-135M-Instruct, fp32 on the CPU, 2 pairs
# per step, live reference, `max_length` T (prompt ~T/4 tokens, completions truncated to T).
# sdpo-rs trains SDPO (q = 0.6); TRL has no SDPO and trains its sigmoid DPO.
#
# Usage: bench/train_bench.sh SMOLLM2_DIR TRL_VENV [LENGTHS] [STEPS] [MODES]
#   SMOLLM2_DIR  made by tools/get-smollm2.sh
#   TRL_VENV     a venv with torch==2.9.0 transformers==5.24.0 trl==1.16.0 peft==0.21.2 datasets
#   LENGTHS      space-separated max_length values (default "1024")
#   STEPS        optimizer steps per run (default 3; the first includes warm-up and is not counted)
#   MODES        any of: gc (gradient_checkpointing on, both sides), nogc (off, both sides),
#                lora (LoRA r 16 all-linear, checkpointing on, both sides) (default "gc nogc")
# Environment: SDPO_ONLY=1: skip TRL (e.g. at lengths where it does not fit in memory).
#              SDPO_DEVICE: sdpo-rs' backend (default flex); SDPO_PRECISION=bf16|fp16: sdpo-rs
#              with TRL's `bf16`/`fp16` (default float32); TRL_PRECISION: bf16 (TRL's default,
#              autocast to bfloat16 on the CPU) or fp32; SDPO_TOML: extra lines for sdpo-rs'
#              run.toml (e.g. "shared_prompt_forward = false").
#              SDPO_BIN: the `sdpo` binary (default: $CARGO_TARGET_DIR/release/sdpo, built with
#              `cargo build --release -p sdpo-cli` when missing; the binary ci/backends.sh builds
#              also serves, with LD_LIBRARY_PATH set to torch's lib/ as that script does).
#
# Every run is its own process under /usr/bin/time -v (peak RSS of the whole process). The step
# time is averaged over the steps after the first: for sdpo-rs the spacing of its per-step log
# lines (logging_steps = 1), for TRL the step times its callback prints.
set -euo pipefail
DIR="$(cd "$1" && pwd)"; VENV="$2"; LENGTHS="${3:-1024}"; STEPS="${4:-3}"; MODES="${5:-gc nogc}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sdpo-rs/target}"
export RAYON_NUM_THREADS="${RAYON_NUM_THREADS:-2}"
BIN="${SDPO_BIN:-$CARGO_TARGET_DIR/release/sdpo}"
if [ ! -x "$BIN" ]; then
    (cd "$ROOT" && cargo build -q --release -p sdpo-cli)
fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
peak() { grep "Maximum resident" "$1" | awk '{printf "%.0f MiB", $6/1024}'; }
# sdpo-rs: the mean spacing of the timestamped per-step log lines after the first (not the
# end-of-run record, which repeats the last step number with train_runtime=...).
step_time() {
    awk '/ step [0-9]+ epoch / && !/train_runtime=/ {t[n++]=$1}
         END { if (n < 2) { print "n/a"; exit } printf "%.1f s", (t[n-1]-t[0])/(n-1) }' "$1"
}
# TRL: the mean of the step times its callback prints ("step N: X s"), steps after the first
# (tqdm's carriage returns may precede them on a line).
trl_step_time() {
    grep -o 'step [0-9]*: [0-9.]* s' "$1" |
        awk '$2+0 > 1 {s += $3; n++} END { if (n < 1) { print "n/a"; exit } printf "%.1f s", s/n }'
}
stamp() { while IFS= read -r line; do printf '%s %s\n' "$(date +%s.%N)" "$line"; done; }
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(date -u +%F)"
echo "sdpo: $("$BIN" --version)"
for T in $LENGTHS; do
    data="$WORK/pairs-$T.jsonl"
    "$VENV/bin/python" "$ROOT/bench/trl_step_bench.py" "$DIR" "$T" on "$STEPS" --write-data "$data"
    for mode in $MODES; do
        case $mode in
        gc) gc=true; trl_gc=on; lora=false ;;
        nogc) gc=false; trl_gc=off; lora=false ;;
        lora) gc=true; trl_gc=on; lora=true ;;
        *) echo "unknown mode $mode" >&2; exit 2 ;;
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
max_length = $T
gradient_checkpointing = $gc
use_peft = $lora
lora_r = 16
lora_alpha = 32
lora_dropout = 0.05
lora_target_modules = "all-linear"
bf16 = $([ "${SDPO_PRECISION:-fp32}" = bf16 ] && echo true || echo false)
fp16 = $([ "${SDPO_PRECISION:-fp32}" = fp16 ] && echo true || echo false)
${SDPO_TOML:-}
TOML
        if [ "$lora" = false ]; then
            sed -i '/^lora_/d' "$WORK/run.toml"
        fi
        rm -rf "$WORK/out"
        # A run that fails (e.g. killed for memory) is reported with its exit status and its
        # last lines, and the benchmark goes on.
        if /usr/bin/time -v -o "$WORK/time.log" "$BIN" train --config "$WORK/run.toml" \
            --device "${SDPO_DEVICE:-flex}" 2>&1 | stamp > "$WORK/sdpo.log"; then
            echo "T=$T $mode  sdpo-rs: $(step_time "$WORK/sdpo.log")/step, peak RSS $(peak "$WORK/time.log")"
        else
            echo "T=$T $mode  sdpo-rs: FAILED, peak RSS $(peak "$WORK/time.log")"; tail -n 3 "$WORK/sdpo.log"
        fi
        [ "${SDPO_ONLY:-0}" = 1 ] && continue
        if /usr/bin/time -v -o "$WORK/time.log" "$VENV/bin/python" "$ROOT/bench/trl_step_bench.py" \
            "$DIR" "$T" "$trl_gc" "$STEPS" --data "$data" $([ "$lora" = true ] && echo --lora) \
            --precision "${TRL_PRECISION:-bf16}" \
            2>&1 | stamp > "$WORK/trl.log"; then
            echo "T=$T $mode  TRL 1.16: $(trl_step_time "$WORK/trl.log")/step, peak RSS $(peak "$WORK/time.log")"
        else
            echo "T=$T $mode  TRL 1.16: FAILED, peak RSS $(peak "$WORK/time.log")"; tail -n 3 "$WORK/trl.log"
        fi
    done
done
