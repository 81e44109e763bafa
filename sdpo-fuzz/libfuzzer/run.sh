#!/usr/bin/env bash
# Coverage-guided fuzzing of one sdpo-fuzz target with libFuzzer (cargo-fuzz, nightly toolchain):
# builds the instrumented binary, writes the target's starting corpus (its seed files and
# generated inputs, `sdpo-fuzz corpus`), and runs libFuzzer for SECONDS under the harness's
# budgets (10 s per input, the counting allocator's 512 MiB per input). Crashes, panics and
# errors that do not say where land in $OUT/TARGET/artifacts; libFuzzer's log in $OUT/TARGET/log.
#   sdpo-fuzz/libfuzzer/run.sh TARGET SECONDS
# Needs: rustup's nightly toolchain and `cargo +nightly install cargo-fuzz`.
# Environment: SDPO_CACHE (default ~/.cache/sdpo-rs), OUT (default $SDPO_CACHE/libfuzzer).
set -euo pipefail
TARGET=$1
SECONDS_TO_RUN=$2
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE=${SDPO_CACHE:-$HOME/.cache/sdpo-rs}
OUT=${OUT:-$CACHE/libfuzzer}
FUZZ_TARGET_DIR=$CACHE/fuzz-target
cd "$ROOT"
cargo +nightly fuzz build --fuzz-dir sdpo-fuzz/libfuzzer -s none --codegen-units 16 \
    --target-dir "$FUZZ_TARGET_DIR" target >&2
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target} cargo build -q -p sdpo-fuzz >&2
HARNESS=${CARGO_TARGET_DIR:-$CACHE/target}/debug/sdpo-fuzz
mkdir -p "$OUT/$TARGET/artifacts"
if [ ! -d "$OUT/$TARGET/corpus" ]; then
    "$HARNESS" corpus --target "$TARGET" --seed 3 --count 1000 --out "$OUT/$TARGET/corpus"
fi
export SDPO_FUZZ_TARGET=$TARGET SDPO_FUZZ_STATE=/dev/shm
"$FUZZ_TARGET_DIR/x86_64-unknown-linux-gnu/release/target" \
    -timeout=10 -rss_limit_mb=4096 -max_len=1048576 -max_total_time="$SECONDS_TO_RUN" \
    -print_final_stats=1 -artifact_prefix="$OUT/$TARGET/artifacts/" \
    "$OUT/$TARGET/corpus" 2>&1 | tee "$OUT/$TARGET/log" | grep -E "^#[0-9]+ +(INITED|DONE|pulse)|^==|ERROR|Test unit|stat::" || true
