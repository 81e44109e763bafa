#!/usr/bin/env bash
# One command for docs/benchmarks.md "Data pipeline: TRL 1.x": the 20k-pair JSONL files
# (standard and chat), sdpo-data's TRL 1.x pipeline (release, `v1_prepare_*`: read and
# tokenize) and TRL 1.16's own `DPOTrainer._prepare_dataset` on the same records
# (bench/data_prepare_bench.py, venv of tools/trl-venv.sh).
#   bench/data_prepare_bench.sh [--repeats N]
set -euo pipefail
source "$(dirname "$0")/data_bench_env.sh" "$@"
PY="$(tools/trl-venv.sh)"
SDPO_DATA_BENCH_PREPARE=1 cargo bench -q -p sdpo-data --bench data_pipeline
echo "== sdpo-data (release), TRL 1.x pipeline"
cargo bench -q -p sdpo-data --bench data_pipeline -- v1_prepare
echo "== TRL 1.16 DPOTrainer._prepare_dataset"
HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 "$PY" bench/data_prepare_bench.py --repeats "$REPEATS"
