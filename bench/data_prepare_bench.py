#!/usr/bin/env python3
"""TRL 1.16's own `DPOTrainer._prepare_dataset` on the 20k-pair bench files, for
docs/benchmarks.md ("Data pipeline: TRL 1.x"): the same records sdpo-data's `v1_prepare_*`
benches read (`cargo bench -p sdpo-data --bench data_pipeline`, SmolLM2 tokenizer,
`max_length` 512, `keep_start`).

`_prepare_dataset` is TRL's method itself, called on a stand-in for the trainer (it reads only
`self._tokenizer`) with a `DPOConfig`; the dataset comes from `datasets.load_dataset("json")`
into a fresh cache. Timed: the load, and `_prepare_dataset` (prompt extraction check, EOS,
chat template, tokenization of the three whole texts, the common-prefix split, the
`keep_start` filter) with `dataset_num_proc` unset (TRL's default: one process), and with 2
given `--num-proc-2`.
Printed: pairs kept, ids, and the id sum and sum of squares, which sdpo-data's bench prints too.

Run with bench/data_prepare_bench.sh (it makes the venv and the files).
"""

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import datasets
import trl
from transformers import AutoTokenizer
from trl import DPOConfig, DPOTrainer

ROOT = Path(__file__).resolve().parent.parent
MAX_LENGTH = 512
# `dataset_num_proc`: TRL's default (None, one process), and 2 (this machine's cores) with --num-proc-2.
NUM_PROCS = [None]


def fixtures_dir() -> Path:
    return Path(os.environ.get("SDPO_FIXTURES") or ROOT / "fixtures")


def bench_dir() -> Path:
    return Path(os.environ.get("SDPO_DATA_BENCH_DIR") or Path(tempfile.gettempdir()) / "sdpo-data-bench")


def checksums(dataset):
    ids = total = squares = 0
    for row in dataset:
        for key in ("prompt_ids", "chosen_ids", "rejected_ids"):
            for i in row[key]:
                ids += 1
                total += i
                squares += i * i
    return ids, total, squares % (1 << 64)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-proc-2", action="store_true", help="also time dataset_num_proc=2")
    args = parser.parse_args()
    if args.num_proc_2:
        NUM_PROCS.append(2)
    datasets.disable_progress_bars()
    tokenizer = AutoTokenizer.from_pretrained(str(fixtures_dir() / "smollm2"))
    trainer = SimpleNamespace(_tokenizer=tokenizer)
    out = tempfile.mkdtemp(prefix="sdpo-prepare-bench-")
    print(f"trl {trl.__version__}, datasets {datasets.__version__}")
    try:
        for name in ("standard", "chat"):
            path = bench_dir() / f"pairs_{name}.jsonl"
            if not path.exists():
                raise SystemExit(f"{path} missing: run bench/data_prepare_bench.sh")
            for num_proc in NUM_PROCS:
                config = DPOConfig(
                    output_dir=out, max_length=MAX_LENGTH, dataset_num_proc=num_proc, report_to=[], bf16=False, use_cpu=True
                )
                loads, prepares = [], []
                for repeat in range(args.repeats):
                    cache = Path(out) / f"cache-{name}-{num_proc}-{repeat}"
                    start = time.perf_counter()
                    raw = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(cache))
                    loaded = time.perf_counter()
                    prepared = DPOTrainer._prepare_dataset(trainer, raw, tokenizer, config, "train")
                    done = time.perf_counter()
                    loads.append(loaded - start)
                    prepares.append(done - loaded)
                    shutil.rmtree(cache, ignore_errors=True)
                n_in = len(raw)
                ids, total, squares = checksums(prepared)
                med_prep = statistics.median(prepares)
                med_all = statistics.median([a + b for a, b in zip(loads, prepares)])
                print(
                    f"{name:8s} num_proc={num_proc}: {len(prepared)} pairs kept of {n_in}, {ids} ids, sum {total}, "
                    f"sum of squares {squares}; _prepare_dataset median {med_prep:.2f} s ({n_in / med_prep:,.0f} pairs/s), "
                    f"with load_dataset {med_all:.2f} s ({n_in / med_all:,.0f} pairs/s); runs {[round(x, 2) for x in prepares]}"
                )
    finally:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
