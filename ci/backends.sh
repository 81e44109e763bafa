#!/usr/bin/env bash
# Runs the tensor tests of sdpo-core, sdpo-models and sdpo-train on the non-default backends:
#   wgpu through Mesa's software Vulkan driver (lavapipe; no GPU needed), and
#   tch  through LibTorch from the PyPI wheel torch==2.9.0 (CPU).
# One release build with `--features wgpu,tch` serves both; each backend then runs the tests
# with SDPO_TEST_BACKENDS=<backend> (the flex half is .ci/run's own `cargo test` step), followed
# by a two-step `sdpo train` smoke run on the quickstart. Idempotent: installs only what is
# missing.
#
# Environment:
#   SDPO_CACHE         cache root (default ~/.cache/sdpo-rs): torch venv, default target dir
#   CARGO_TARGET_DIR   shared cargo target dir (default $SDPO_CACHE/target)
#   SDPO_CI_BACKENDS   which backends to run (default "wgpu tch")
#   SDPO_CI_SMOKE      0 to skip the `sdpo train` smoke runs (default 1)
# See docs/backends.md for what each step needs and how long it takes.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

CACHE=${SDPO_CACHE:-$HOME/.cache/sdpo-rs}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target}
VENV=$CACHE/torch-venv
TORCH_VERSION=2.9.0
BACKENDS=${SDPO_CI_BACKENDS:-wgpu tch}
SMOKE=${SDPO_CI_SMOKE:-1}
PACKAGES=(-p sdpo-core -p sdpo-models -p sdpo-train -p sdpo-cli)

TIMINGS=()
SCRIPT_START=$(date +%s)

# step NAME COMMAND...: runs the command, prints and records its wall time.
step() {
    local name=$1
    shift
    local start
    start=$(date +%s)
    echo "==> [$name] $*"
    "$@"
    local took=$(($(date +%s) - start))
    echo "<== [$name] ${took}s"
    TIMINGS+=("$(printf '%-28s %5ss' "$name" "$took")")
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_lavapipe() {
    if dpkg -s mesa-vulkan-drivers libvulkan1 vulkan-tools >/dev/null 2>&1; then
        echo "lavapipe (mesa-vulkan-drivers, libvulkan1, vulkan-tools) already installed"
    else
        as_root apt-get update
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y \
            mesa-vulkan-drivers libvulkan1 vulkan-tools
    fi
    vulkaninfo --summary 2>/dev/null | grep -E 'deviceName|driverName' || true
}

install_torch() {
    if [ -x "$VENV/bin/python" ] &&
        "$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
        echo "torch $TORCH_VERSION already in $VENV"
    else
        mkdir -p "$CACHE"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install --quiet "torch==$TORCH_VERSION"
    fi
}

smoke() {
    local backend=$1 bin=$2 out
    out=$(mktemp -d)
    # The quickstart's default eval batch (32 rows x 36 tokens x vocab 49152 = 226 MB of logits)
    # once failed on lavapipe with "can't allocate buffer"; the trainer now runs such batches in
    # row chunks of <= 128 MiB of logits, and this run keeps the default batch to prove it.
    "$bin" train --config examples/quickstart/sdpo.toml --device "$backend" \
        --set max_steps=2 \
        --set "output_dir=\"$out/run\""
    if ! find "$out/run" -name model.safetensors | grep -q .; then
        echo "smoke test on $backend wrote no model.safetensors" >&2
        ls -R "$out" >&2
        exit 1
    fi
    rm -rf "$out"
}

# One release build with both backends: burn, wgpu and torch-sys are compiled once, and the two
# test runs below reuse it. Release, not debug: a debug build with wgpu is ~13 GB, and the
# shader-heavy wgpu tests are the slow part of the run.
CARGO_TEST=(cargo test --release "${PACKAGES[@]}" --features wgpu,tch)
# Every test binary runs to the end, so that one failure does not hide the others.
RUN_ALL=(--no-fail-fast)

for backend in $BACKENDS; do
    case $backend in
    wgpu | tch) ;;
    *)
        echo "unknown backend '$backend' in SDPO_CI_BACKENDS (wgpu, tch)" >&2
        exit 2
        ;;
    esac
done

step "install lavapipe" install_lavapipe
step "install torch venv" install_torch
torch_lib=$("$VENV/bin/python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
# Build: torch-sys finds LibTorch through the venv's python (LIBTORCH_USE_PYTORCH=1, python3
# first on PATH). Run: every binary of this build links libtorch_cpu.so etc. from torch's lib/.
export LIBTORCH_USE_PYTORCH=1
export PATH="$VENV/bin:$PATH"
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# lavapipe warns on every device open without it; a private 0700 directory silences that.
if [ -z "${XDG_RUNTIME_DIR:-}" ]; then
    XDG_RUNTIME_DIR=$(mktemp -d)
    export XDG_RUNTIME_DIR
fi

step "build (release, wgpu+tch)" "${CARGO_TEST[@]}" --no-run
bin=$(mktemp -d)/sdpo
# The test build includes the sdpo binary (sdpo-cli's tests run it); copy it away so that a
# concurrent build in the shared target dir cannot replace it underneath the smoke runs.
cp "$CARGO_TARGET_DIR/release/sdpo" "$bin"
"$bin" --version
for backend in $BACKENDS; do
    step "$backend: tests" env SDPO_TEST_BACKENDS="$backend" "${CARGO_TEST[@]}" "${RUN_ALL[@]}"
    if [ "$SMOKE" = 1 ]; then
        step "$backend: sdpo train, 2 steps" smoke "$backend" "$bin"
    fi
done
if [ -n "${SDPO_SMOLLM2_DIR:-}" ]; then
    # The memory engine's oracle at the length where it matters (issue 10): two 1024-token
    # SmolLM2 rows, transformers' log-probs and the gradient of all 272 tensors, through the
    # memory-bounded engine and the whole graph, on flex in this release build (a debug build
    # takes ~20 min; .ci/run's debug test stage skips it for that reason).
    step "flex: SmolLM2 1024-token oracle" env SDPO_TEST_BACKENDS=flex "${CARGO_TEST[@]}" \
        --test engine_exactness -- --ignored smollm2_long_rows_logps_and_gradients_match_transformers
fi
echo
echo "ci/backends.sh timings:"
printf '  %s\n' "${TIMINGS[@]}"
echo "  total                        $(($(date +%s) - SCRIPT_START))s"
