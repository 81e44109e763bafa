#!/usr/bin/env bash
# One command for the Parquet data benchmark (docs/benchmarks.md, "Data pipeline: Parquet"):
# 20k-pair files as JSONL and Parquet; sdpo-data (release) reading, tokenizing and collating
# both; Python per-row/batched on the JSONL (bench/data_tokenize_bench.py); and
# datasets.load_dataset("parquet") + TRL-style map + collation (bench/data_arrow_bench.py).
#   bench/data_arrow_bench.sh [--repeats N]     (about 10 min on 2 cores)
set -euo pipefail
source "$(dirname "$0")/data_bench_env.sh" "$@"
PY="$(tools/make_arrow_fixtures.sh --venv)"
SDPO_DATA_BENCH_PREPARE=1 cargo bench -q -p sdpo-data --bench data_pipeline
HF_DATASETS_OFFLINE=1 "$PY" bench/data_arrow_bench.py --convert
echo "== sdpo-data (release): JSONL and Parquet"
cargo bench -q -p sdpo-data --bench data_pipeline
echo "== Python on JSONL (tokenizers, per row and batched)"
"$PY" bench/data_tokenize_bench.py --repeats "$REPEATS"
echo "== Python on Parquet (datasets.load_dataset + TRL-style map, and batched)"
HF_DATASETS_OFFLINE=1 "$PY" bench/data_arrow_bench.py --repeats "$REPEATS"
