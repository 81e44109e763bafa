#!/usr/bin/env python3
"""Python side of the Parquet data benchmark (run by bench/data_arrow_bench.sh).

`--convert`: writes pairs_{standard,chat}.parquet next to the 20k-pair JSONL files of
`cargo bench -p sdpo-data --bench data_pipeline` with `datasets` (`Dataset.from_json(...)
.to_parquet(...)`: snappy, as Hub files), unless present.

Default: times what a TRL user runs on those Parquet files:
  * `trl_map`: `datasets.load_dataset("parquet", data_files=..., split="train")` into a fresh
    cache dir, `Dataset.map(tokenize_row)` (single process, TRL 0.28's DPO preparation: chat
    template, separate tokenization, EOS on standard completions, prompt cut to the last
    `max_prompt_length` ids), then shuffled batches of 8 fetched with `ds[indices]` and collated
    as DataCollatorForPreference (keep_end to `max_length`, right padding, numpy int64);
  * `batched`: `load_dataset` as above, then `encode_batch_fast` over all texts (the Rust core of
    `tokenizers` on all cores) and the same collation: the fastest way to drive the Python
    package.
The token ids are those of bench/data_tokenize_bench.py (same functions), which match sdpo-data.
"""

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import datasets  # noqa: E402
from data_tokenize_bench import (  # noqa: E402
    BATCH,
    Setup,
    bench_dir,
    collate,
    finish,
    texts,
    tokenize_batched,
)

datasets.disable_progress_bars()


def convert():
    for name in ("standard", "chat"):
        src = bench_dir() / f"pairs_{name}.jsonl"
        dst = bench_dir() / f"pairs_{name}.parquet"
        if dst.exists():
            continue
        if not src.exists():
            raise SystemExit(f"{src} missing: run `cargo bench -p sdpo-data --bench data_pipeline` first")
        cache = tempfile.mkdtemp(prefix="sdpo-arrow-convert-")
        try:
            ds = datasets.Dataset.from_json(str(src), cache_dir=cache)
            ds.to_parquet(str(dst))
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        print(f"wrote {dst} ({ds.num_rows} rows)", file=sys.stderr)


def load(path, cache):
    return datasets.load_dataset("parquet", data_files=str(path), split="train", cache_dir=cache)


def trl_map(setup, path, cache):
    ds = load(path, cache)
    enc = setup.tokenizer.encode

    def tokenize_row(row):
        (p, c, r, add_eos) = texts(setup, [row])[0]
        p, c, r = finish(
            setup,
            enc(p, add_special_tokens=False).ids,
            enc(c, add_special_tokens=False).ids,
            enc(r, add_special_tokens=False).ids,
            add_eos,
        )
        return {"prompt_input_ids": p, "chosen_input_ids": c, "rejected_input_ids": r}

    ds = ds.map(tokenize_row, remove_columns=ds.column_names)
    order = list(range(len(ds)))
    random.Random(0).shuffle(order)
    total_ids = 0
    for start in range(0, len(order), BATCH):
        rows = ds[order[start : start + BATCH]]
        pairs = list(zip(rows["prompt_input_ids"], rows["chosen_input_ids"], rows["rejected_input_ids"]))
        total_ids += sum(len(p) + len(c) + len(r) for p, c, r in pairs)
        collate(setup, pairs, range(len(pairs)))
    return len(ds), total_ids


def batched(setup, path, cache):
    ds = load(path, cache)
    pairs = tokenize_batched(setup, ds.to_list())
    order = list(range(len(pairs)))
    random.Random(0).shuffle(order)
    for start in range(0, len(order), BATCH):
        collate(setup, pairs, order[start : start + BATCH])
    return len(pairs), sum(len(p) + len(c) + len(r) for p, c, r in pairs)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--convert", action="store_true", help="only write the Parquet files")
    args = parser.parse_args()
    if args.convert:
        convert()
        return
    setup = Setup()
    for name in ("standard", "chat"):
        path = bench_dir() / f"pairs_{name}.parquet"
        if not path.exists():
            raise SystemExit(f"{path} missing: run bench/data_arrow_bench.sh")
        for variant, fn in (("trl_map", trl_map), ("batched", batched)):
            times = []
            for _ in range(args.repeats):
                cache = tempfile.mkdtemp(prefix="sdpo-arrow-bench-")
                try:
                    start = time.perf_counter()
                    n, ids = fn(setup, path, cache)
                    times.append(time.perf_counter() - start)
                finally:
                    shutil.rmtree(cache, ignore_errors=True)
            med = statistics.median(times)
            print(
                f"python parquet {name:8s} {variant:8s} {n} pairs, {ids} ids  median {med:.3f} s  "
                f"({n / med:,.0f} pairs/s)  runs {[round(x, 3) for x in times]}"
            )


if __name__ == "__main__":
    main()
