#!/usr/bin/env bash
# What report_to = ["tensorboard", "mlflow"] adds to a SmolLM2-135M SDPO step: the same short
# run of examples/smollm2 (no evaluation, no checkpoints, a record every step) alternately with
# report_to = "none" and with both integrations against a local `mlflow server`, ROUNDS times
# each; prints each run's seconds per step (train_runtime / steps of its end-of-run record).
#
#   bench/tracking_overhead.sh SMOLLM2_DIR [STEPS] [ROUNDS]
#
# Environment: SDPO_BIN (default $CARGO_TARGET_DIR/release/sdpo), SDPO_CACHE.
# docs/benchmarks.md has the figures and the machine.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
MODEL=${1:?usage: bench/tracking_overhead.sh SMOLLM2_DIR [STEPS] [ROUNDS]}
STEPS=${2:-4}
ROUNDS=${3:-2}
CACHE=${SDPO_CACHE:-$HOME/.cache/sdpo-rs}
SDPO=${SDPO_BIN:-${CARGO_TARGET_DIR:-$CACHE/target}/release/sdpo}
# shellcheck source=ci/mlflow-server.sh
source ci/mlflow-server.sh
tracking_venv

WORK=$(mktemp -d)
trap 'stop_mlflow_server; rm -rf "$WORK"' EXIT
start_mlflow_server "$WORK"
export MLFLOW_EXPERIMENT_NAME=sdpo-tracking-overhead
grep -v -E '^(eval_file|eval_steps|per_device_eval_batch_size|save_total_limit)' \
    examples/smollm2/sdpo.toml >"$WORK/run.toml"

run() {
    local name=$1 report_to=$2
    "$SDPO" train --config "$WORK/run.toml" --set "model_name_or_path=\"$MODEL\"" \
        --set "max_steps=$STEPS" --set logging_steps=1 --set 'save_strategy="no"' \
        --set "report_to=$report_to" --set "output_dir=\"$WORK/$name\"" 2>"$WORK/$name.log"
    "$TRACKING_PY" - "$WORK/$name/metrics.jsonl" "$name" <<'PY'
import json, sys
end = [json.loads(l) for l in open(sys.argv[1]) if "train_runtime" in l][-1]
print(f"{sys.argv[2]:<12} {end['train_runtime'] / end['step']:8.3f} s/step  ({end['step']} steps, train_runtime {end['train_runtime']} s)")
PY
}

for round in $(seq 1 "$ROUNDS"); do
    run "none-$round" '"none"'
    run "tracked-$round" '["tensorboard", "mlflow"]'
done
