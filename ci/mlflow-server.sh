# Sourced by ci/tracking.sh and bench/tracking_overhead.sh: the pinned TensorBoard + MLflow venv
# and a local `mlflow server` on 127.0.0.1 (SQLite backend store, artifacts served).
#
#   tracking_venv                 makes $SDPO_CACHE/tracking-venv if needed; sets TRACKING_PY
#   start_mlflow_server WORK_DIR  starts a server on a free port, waits for /health, exports
#                                 MLFLOW_TRACKING_URI; sets MLFLOW_SERVER_PID
#   stop_mlflow_server            stops it (its whole process group)

TRACKING_VENV="${SDPO_CACHE:-$HOME/.cache/sdpo-rs}/tracking-venv"
TRACKING_PY="$TRACKING_VENV/bin/python"
TRACKING_PINS=(tensorboard==2.21.0 mlflow==3.17.2)
MLFLOW_SERVER_PID=""

tracking_venv() {
    if ! "$TRACKING_PY" - <<'PY' 2>/dev/null; then
import mlflow, tensorboard
assert tensorboard.__version__ == "2.21.0", tensorboard.__version__
assert mlflow.__version__ == "3.17.2", mlflow.__version__
PY
        echo "tracking: installing ${TRACKING_PINS[*]} into $TRACKING_VENV"
        mkdir -p "$(dirname "$TRACKING_VENV")"
        [ -x "$TRACKING_PY" ] || python3 -m venv "$TRACKING_VENV"
        "$TRACKING_PY" -m pip install --quiet --disable-pip-version-check "${TRACKING_PINS[@]}"
    fi
}

start_mlflow_server() {
    local work=$1 port
    port=$("$TRACKING_PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    export MLFLOW_TRACKING_URI="http://127.0.0.1:$port"
    setsid "$TRACKING_VENV/bin/mlflow" server --host 127.0.0.1 --port "$port" --workers 1 \
        --backend-store-uri "sqlite:///$work/mlflow.db" --artifacts-destination "$work/mlartifacts" \
        >"$work/mlflow.log" 2>&1 &
    MLFLOW_SERVER_PID=$!
    for _ in $(seq 1 180); do
        curl -sf "$MLFLOW_TRACKING_URI/health" >/dev/null 2>&1 && return 0
        kill -0 "$MLFLOW_SERVER_PID" 2>/dev/null || break
        sleep 1
    done
    cat "$work/mlflow.log" >&2
    echo "tracking: the mlflow server did not come up" >&2
    return 1
}

stop_mlflow_server() {
    if [ -n "$MLFLOW_SERVER_PID" ] && kill -0 "$MLFLOW_SERVER_PID" 2>/dev/null; then
        # setsid made the server a process-group leader: stop uvicorn's workers with it.
        kill -- "-$MLFLOW_SERVER_PID" 2>/dev/null || kill "$MLFLOW_SERVER_PID"
        wait "$MLFLOW_SERVER_PID" 2>/dev/null || true
    fi
    MLFLOW_SERVER_PID=""
}
