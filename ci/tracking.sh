#!/usr/bin/env bash
# Experiment tracking against the real tools (issue 26):
#   1. installs TensorBoard and MLflow from PyPI into $SDPO_CACHE/tracking-venv (idempotent),
#   2. starts a real `mlflow server` on 127.0.0.1 (SQLite backend store, artifacts served),
#   3. trains a short quickstart with report_to = ["tensorboard", "mlflow"] through the `sdpo`
#      binary and reads every scalar back with TensorBoard's event reader and MLflow's Python
#      client, comparing them with metrics.jsonl (ci/tracking_check.py),
#   4. stops the server and trains again: the run must finish, with one warning saying what
#      MLflow did not get,
#   5. compares the two runs in one page (`sdpo report RUN_A RUN_B`) and opens it in headless
#      Chromium (ci/html-check.sh, which installs Chromium when it is missing).
#
# Environment: SDPO_CACHE (default ~/.cache/sdpo-rs), CARGO_TARGET_DIR (default
# $SDPO_CACHE/target), SDPO_BIN (default $CARGO_TARGET_DIR/debug/sdpo, built by `cargo test
# --workspace`; built here when missing).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CACHE=${SDPO_CACHE:-$HOME/.cache/sdpo-rs}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target}
SDPO=${SDPO_BIN:-$CARGO_TARGET_DIR/debug/sdpo}
START=$SECONDS
# shellcheck source=ci/mlflow-server.sh
source ci/mlflow-server.sh

tracking_venv
PY=$TRACKING_PY
echo "tracking: venv ready ($(( SECONDS - START )) s)"

if [ ! -x "$SDPO" ]; then
    # The same features as the README's test command, so nothing is rebuilt twice.
    cargo test --workspace --no-run --quiet
fi

WORK=$(mktemp -d)
cleanup() {
    stop_mlflow_server
    rm -rf "$WORK"
}
trap cleanup EXIT

export MLFLOW_EXPERIMENT_NAME="sdpo-ci-tracking"
start_mlflow_server "$WORK"
echo "tracking: mlflow server up at $MLFLOW_TRACKING_URI ($(( SECONDS - START )) s)"

quickstart() {
    local out=$1
    shift
    "$SDPO" train --config examples/quickstart/sdpo.toml \
        --set max_steps=6 --set logging_steps=2 --set eval_steps=3 --set 'save_strategy="no"' \
        --set 'report_to=["tensorboard", "mlflow"]' --set "output_dir=\"$out\"" "$@"
}

echo "tracking: run 1 against the server"
quickstart "$WORK/tracked" --set 'run_name="ci-tracked"' 2>"$WORK/tracked.log" \
    || { cat "$WORK/tracked.log"; exit 1; }
cat "$WORK/tracked.log"
grep -q '^tensorboard: writing ' "$WORK/tracked.log"
grep -q '^mlflow: run logged at ' "$WORK/tracked.log"
if grep -q '^warning: MLflow' "$WORK/tracked.log"; then
    echo "tracking: run 1 warned about MLflow" >&2
    exit 1
fi
"$PY" ci/tracking_check.py "$WORK/tracked" "$MLFLOW_TRACKING_URI" "$MLFLOW_EXPERIMENT_NAME" ci-tracked

echo "tracking: run 2 against a stopped server"
stop_mlflow_server
quickstart "$WORK/untracked" --set 'run_name="ci-server-down"' 2>"$WORK/untracked.log" \
    || { cat "$WORK/untracked.log"; echo "tracking: run 2 failed" >&2; exit 1; }
cat "$WORK/untracked.log"
test -f "$WORK/untracked/model.safetensors"
warnings=$(grep -c '^warning: MLflow at ' "$WORK/untracked.log" || true)
if [ "$warnings" != 1 ]; then
    echo "tracking: expected one MLflow warning, got $warnings" >&2
    exit 1
fi
grep '^warning: MLflow at ' "$WORK/untracked.log" | grep -q 'the run was never created'

echo "tracking: the two runs in one page"
"$SDPO" report "$WORK/tracked" "$WORK/untracked" --out "$WORK/compare.html"
test -s "$WORK/compare.html"
# The run report's 13 charts of an SDPO run, one per metric: 18.
bash ci/html-check.sh --charts 18 "$WORK/compare.html"
echo "tracking: done in $(( SECONDS - START )) s"
