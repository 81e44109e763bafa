#!/usr/bin/env bash
# The reference cache at scale, through the `sdpo` binary on the quickstart (flex):
#   1. `precompute-ref --shard K/3` in three processes, shard 1 killed (SIGKILL) after some of
#      its batches and restarted; `--merge` gives the one-process file byte for byte;
#   2. `export-pairs`, then tools/ref_logps.py (transformers 5.24 on the CPU, float32) writes the
#      cache from the exported rows; training reads it, and its first step's loss, rewards and
#      SDPO selection equal those of the run that computed its own cache (tolerance below).
# The reference is the quickstart's policy after two steps without warm-up, saved: weight files
# transformers loads, and weights that differ from the policy's (with the initial policy as the
# reference every SDPO score is exactly 0 on sdpo's own path, and rounding noise of 1e-7 from
# another engine would decide the selection).
#
# Usage: ci/ref-cache.sh   (from anywhere; needs the debug `sdpo` of CARGO_TARGET_DIR and the
# venv of ci/lora-peft.sh: transformers, torch, safetensors)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${SDPO_CACHE:-$HOME/.cache/sdpo-rs}"
TARGET="${CARGO_TARGET_DIR:-$CACHE/target}"
SDPO="$TARGET/debug/sdpo"
PY="${SDPO_REF_PYTHON:-$CACHE/lora-peft-venv/bin/python}"
cd "$ROOT"
W="$(mktemp -d)"
trap 'rm -rf "$W"' EXIT

"$SDPO" train --device flex --config examples/quickstart/sdpo.toml --set max_steps=2 \
    --set warmup_ratio=0.0 \
    --set "output_dir=\"$W/ref\"" > /dev/null
test -f "$W/ref/model.safetensors"

args_for() { # args_for OUTPUT_DIR: sets ARGS, the options every command below shares
    ARGS=(--device flex --config examples/quickstart/sdpo.toml
        --set "ref_model_name_or_path=\"$W/ref\"" --set precompute_ref_log_probs=true
        --set precompute_ref_batch_size=2 --set max_steps=1 --set logging_steps=1
        --set "output_dir=\"$W/$1\"")
}
run() { # run SUBCOMMAND OUTPUT_DIR [ARGS...]
    local command="$1"
    args_for "$2"
    shift 2
    "$SDPO" "$command" "${ARGS[@]}" "$@"
}

echo "ref-cache: one process"
run precompute-ref one > /dev/null

echo "ref-cache: three shards, shard 1 killed after some batches and restarted"
run precompute-ref shards --shard 0/3 > /dev/null
run precompute-ref shards --shard 2/3 > /dev/null
caught=""
for attempt in 1 2 3 4 5; do
    rm -f "$W"/shards/ref_logps_cache/*shard-1-of-3*
    # A simple command in the background: $! is sdpo itself, so the kill below reaches it
    # (a shell function would run in a subshell, and killing that would leave sdpo running).
    args_for shards
    "$SDPO" precompute-ref "${ARGS[@]}" --shard 1/3 > /dev/null 2>&1 &
    pid=$!
    partial=""
    while kill -0 "$pid" 2> /dev/null; do
        partial="$(find "$W/shards/ref_logps_cache" -name '*shard-1-of-3*.partial' -size +2k 2> /dev/null || true)"
        if [ -n "$partial" ]; then kill -9 "$pid"; break; fi
        sleep 0.02
    done
    wait "$pid" 2> /dev/null || true
    [ -n "$partial" ] || continue
    log="$(run precompute-ref shards --shard 1/3 2>&1)" || { echo "$log" >&2; exit 1; }
    case "$log" in *"resuming after pair"*) caught=1; break ;; esac
done
[ -n "$caught" ] || { echo "ref-cache: shard 1 was never killed mid-way" >&2; exit 1; }
run precompute-ref shards --merge > /dev/null
for one in "$W"/one/ref_logps_cache/*.safetensors; do
    cmp "$one" "$W/shards/ref_logps_cache/$(basename "$one")"
done
echo "ref-cache: merged shards equal the one-process cache byte for byte"

echo "ref-cache: transformers writes the cache from sdpo export-pairs"
run export-pairs ext --out "$W/pairs" > /dev/null
"$PY" tools/ref_logps.py --pairs "$W/pairs" --reference "$W/ref" --output-dir "$W/ext" \
    --dtype float32
run train ext 2> "$W/ext.log" > /dev/null
grep -q "reading reference log-probs written by \`tools/ref_logps.py transformers" "$W/ext.log" \
    || { cat "$W/ext.log" >&2; exit 1; }
run train one > /dev/null 2>&1
"$PY" - "$W/one/metrics.jsonl" "$W/ext/metrics.jsonl" <<'PYEOF'
import json, math, sys
# Float32 on both sides; the log-probs differ in rounding only (flex vs PyTorch kernels).
TOL = 1e-4
first = [json.loads(open(p).readline()) for p in sys.argv[1:]]
keys = ["loss", "rewards/chosen", "rewards/rejected", "rewards/margins",
        "sdpo/chosen_kept_fraction", "sdpo/rejected_kept_fraction",
        "sdpo/chosen_threshold", "sdpo/rejected_threshold"]
for k in keys:
    a, b = first[0][k], first[1][k]
    ok = a is not None and b is not None and math.isfinite(a) and math.isfinite(b) \
        and abs(a - b) <= TOL * max(1.0, abs(a))
    print(f"ref-cache: {k}: own cache {a}, transformers cache {b}")
    assert ok, f"{k} differs beyond {TOL}"
PYEOF
echo "ref-cache: passed"
