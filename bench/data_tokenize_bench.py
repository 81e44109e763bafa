#!/usr/bin/env python3
"""Python baseline for sdpo-data's benchmark: tokenize and collate the same 20k-pair JSONL files.

Processing is TRL 0.28's DPO preparation, re-implemented without torch/datasets:
standard rows -> prompt, chosen, rejected tokenized separately (no special tokens), EOS appended
to completions, prompt cut to the last `max_prompt_length` tokens; conversational rows -> the
chat template (Jinja2, set up as transformers does) renders the prompt with the generation
prompt and prompt+completion whole, the completion being the suffix after the prompt. Then
shuffled batches of 8 are collated as DataCollatorForPreference does (chosen rows then rejected
rows, keep_end truncation to `max_length`, right padding) into numpy int64 arrays.

Two variants are timed:
  * `per_row`: one `tokenizer.encode` call per text, as TRL's `tokenize_row` under
    `datasets.map` (single process);
  * `batched`: `encode_batch` over all texts, so the Rust core of `tokenizers` runs in parallel
    on all cores (the fastest way to drive the Python package).

Input: `pairs_standard.jsonl` and `pairs_chat.jsonl` written by
`cargo bench -p sdpo-data --bench data_pipeline` into $SDPO_DATA_BENCH_DIR (default:
<tmp>/sdpo-data-bench). Usage:
  bench/.venv/bin/python bench/data_tokenize_bench.py [--repeats 3]
"""

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

MAX_LENGTH = 512
MAX_PROMPT_LENGTH = 256
BATCH = 8

ROOT = Path(__file__).resolve().parent.parent


def fixtures_dir() -> Path:
    return Path(os.environ.get("SDPO_FIXTURES") or ROOT / "fixtures")


def bench_dir() -> Path:
    return Path(os.environ.get("SDPO_DATA_BENCH_DIR") or Path(tempfile.gettempdir()) / "sdpo-data-bench")


class Setup:
    def __init__(self):
        tok_dir = fixtures_dir() / "smollm2"
        self.tokenizer = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
        config = json.loads((tok_dir / "tokenizer_config.json").read_text())
        self.eos_token = config["eos_token"]
        self.eos = self.tokenizer.token_to_id(config["eos_token"])
        self.pad = self.tokenizer.token_to_id(config.get("pad_token") or config["eos_token"])
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
        self.template = env.from_string(config["chat_template"])
        self.special = {k: config.get(k) for k in ("bos_token", "eos_token", "pad_token", "unk_token")}

    def render(self, messages, add_generation_prompt):
        return self.template.render(messages=messages, add_generation_prompt=add_generation_prompt, **self.special)


def common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def texts(setup: Setup, rows):
    """(prompt, chosen, rejected, add_eos) strings per row, as TRL's maybe_apply_chat_template."""
    out = []
    for row in rows:
        if isinstance(row["chosen"], str):
            out.append((row["prompt"], row["chosen"], row["rejected"], True))
        else:
            prompt = setup.render(row["prompt"], True)
            full_c = setup.render(row["prompt"] + row["chosen"], False)
            full_r = setup.render(row["prompt"] + row["rejected"], False)
            split = min(common_prefix(prompt, full_c), common_prefix(prompt, full_r))
            out.append((prompt[:split], full_c[split:], full_r[split:], False))
    return out


def finish(setup, prompt_ids, chosen_ids, rejected_ids, add_eos):
    if add_eos:
        if not chosen_ids or chosen_ids[-1] != setup.eos:
            chosen_ids = chosen_ids + [setup.eos]
        if not rejected_ids or rejected_ids[-1] != setup.eos:
            rejected_ids = rejected_ids + [setup.eos]
    return prompt_ids[-MAX_PROMPT_LENGTH:], chosen_ids, rejected_ids


def tokenize_per_row(setup, rows):
    enc = setup.tokenizer.encode
    pairs = []
    for p, c, r, add_eos in texts(setup, rows):
        pairs.append(
            finish(
                setup,
                enc(p, add_special_tokens=False).ids,
                enc(c, add_special_tokens=False).ids,
                enc(r, add_special_tokens=False).ids,
                add_eos,
            )
        )
    return pairs


def tokenize_batched(setup, rows):
    t = texts(setup, rows)
    batch = getattr(setup.tokenizer, "encode_batch_fast", setup.tokenizer.encode_batch)
    ps = batch([x[0] for x in t], add_special_tokens=False)
    cs = batch([x[1] for x in t], add_special_tokens=False)
    rs = batch([x[2] for x in t], add_special_tokens=False)
    return [finish(setup, p.ids, c.ids, r.ids, x[3]) for p, c, r, x in zip(ps, cs, rs, t)]


def collate(setup, pairs, indices):
    seqs, masks = [], []
    for side in (1, 2):
        for i in indices:
            prompt, completion = pairs[i][0], pairs[i][side]
            seq = prompt + completion
            mask = [0] * len(prompt) + [1] * len(completion)
            seqs.append(seq[-MAX_LENGTH:])  # keep_end
            masks.append(mask[-MAX_LENGTH:])
    t = max(len(s) for s in seqs)
    input_ids = np.full((len(seqs), t), setup.pad, dtype=np.int64)
    attention = np.zeros((len(seqs), t), dtype=np.int64)
    completion = np.zeros((len(seqs), t), dtype=np.int64)
    for row, (s, m) in enumerate(zip(seqs, masks)):
        input_ids[row, : len(s)] = s
        attention[row, : len(s)] = 1
        completion[row, : len(m)] = m
    return input_ids, attention, completion


def run(setup, path, tokenize):
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    pairs = tokenize(setup, rows)
    run.total_ids = sum(len(p) + len(c) + len(r) for p, c, r in pairs)
    order = list(range(len(pairs)))
    random.Random(0).shuffle(order)
    cells = 0
    for start in range(0, len(order), BATCH):
        ids, _, _ = collate(setup, pairs, order[start : start + BATCH])
        cells += ids.size
    return len(pairs), cells


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    setup = Setup()
    for name in ("standard", "chat"):
        path = bench_dir() / f"pairs_{name}.jsonl"
        if not path.exists():
            raise SystemExit(f"{path} missing: run `cargo bench -p sdpo-data --bench data_pipeline` first")
        for variant, fn in (("per_row", tokenize_per_row), ("batched", tokenize_batched)):
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                n, _ = run(setup, path, fn)
                times.append(time.perf_counter() - start)
            med = statistics.median(times)
            print(f"{name:8s} {variant:8s} {n} pairs, {run.total_ids} ids  median {med:.3f} s  ({n / med:,.0f} pairs/s)  runs {[round(x, 3) for x in times]}")


if __name__ == "__main__":
    main()
