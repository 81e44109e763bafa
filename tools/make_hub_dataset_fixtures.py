#!/usr/bin/env python3
"""Writes fixtures/hub_dataset/: a dataset repository laid out as on the Hub (a README.md whose
YAML `configs:` block picks data files per split, JSONL, gzipped JSONL, a JSON array, a
`data_dir` config, hidden files that must be skipped) and `expected.json`, what `datasets`
5.x itself loads from it:

* `configs`: for each config (and `null` for the default one) and each split,
  `datasets.load_dataset(dir, name, split=split)` as the list of `chosen` texts in order;
* `mixtures`: TRL's `get_dataset(DatasetMixtureConfig(datasets=[...]))` on the same directory
  (fractions, split slices, `columns`), as the `chosen` texts of its `train` split plus the
  column names it keeps.

Run with tools/make_hub_dataset_fixtures.sh (it makes the pinned venv).
"""

import gzip
import json
import os
import platform
import shutil
import sys
from pathlib import Path

import datasets
import pyarrow as pa
import trl
from trl.scripts.utils import DatasetConfig, DatasetMixtureConfig, get_dataset

ROOT = Path(__file__).resolve().parent.parent

README = """---
license: apache-2.0
configs:
- config_name: default
  default: true
  data_files:
  - split: train
    path:
    - data/train/part-*.jsonl
    - data/train/extra.jsonl.gz
  - split: test
    path: data/test-*.jsonl
- config_name: small
  data_dir: small
- config_name: single
  data_files: single/*.json
---
# A preference dataset in the Hub's layout

Used by sdpo-data's tests (`tools/make_hub_dataset_fixtures.py`).
"""


def pair(tag, i, tools=False):
    record = {
        "prompt": f"{tag} prompt {i}",
        "chosen": f" {tag} chosen {i}",
        "rejected": f" {tag} rejected {i}",
    }
    if tools:
        record["tools"] = json.dumps([{"type": "function", "function": {"name": f"tool_{i}"}}])
    return record


def write_jsonl(path, records, compress=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in records)
    if compress:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")


def build(out):
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / "README.md").write_text(README, encoding="utf-8")
    write_jsonl(out / "data/train/part-0.jsonl", [pair("train-a", i, tools=True) for i in range(3)])
    write_jsonl(out / "data/train/part-1.jsonl", [pair("train-b", i, tools=True) for i in range(2)])
    write_jsonl(out / "data/train/extra.jsonl.gz", [pair("train-gz", i, tools=True) for i in range(2)], compress=True)
    # A hidden file the pattern would match: datasets skips it.
    write_jsonl(out / "data/train/.part-9.jsonl", [pair("hidden", 0, tools=True)])
    for shard in range(2):
        write_jsonl(out / f"data/test-0000{shard}-of-00002.jsonl", [pair(f"test-{shard}", i) for i in range(2)])
    # `datasets` picks one file format for the whole repository, so every file here is JSON.
    for split, rows in [("train", 4), ("validation", 2)]:
        write_jsonl(out / f"small/{split}-00000-of-00001.jsonl", [pair(f"small-{split}", i) for i in range(rows)])
    (out / "single").mkdir(parents=True, exist_ok=True)  # noqa: the JSON-array file of `single`
    (out / "single/records.json").write_text(
        json.dumps([pair("single", i) for i in range(3)]), encoding="utf-8"
    )


def chosen(dataset):
    return list(dataset["chosen"])


MIXTURES = [
    {
        "name": "two_datasets",
        "datasets": [
            {"path": ".", "split": "train"},
            {"path": ".", "name": "small", "split": "validation"},
        ],
    },
    {
        "name": "slices",
        "datasets": [
            {"path": ".", "split": "train[:3]"},
            {"path": ".", "name": "small", "split": "train[50%:]+validation[-1:]"},
        ],
    },
    {
        "name": "fractions",
        "datasets": [
            {"path": ".", "split": "train", "fraction": 0.5},
            {"path": ".", "name": "small", "split": "train", "fraction": 0.5},
        ],
    },
    {
        "name": "columns",
        "datasets": [
            {"path": ".", "split": "train", "columns": ["prompt", "chosen", "rejected"]},
            {"path": ".", "name": "single", "split": "train", "columns": ["prompt", "chosen", "rejected"]},
        ],
    },
    {
        "name": "data_files",
        "datasets": [
            {"path": ".", "data_files": {"train": "data/test-*.jsonl"}, "split": "train"},
        ],
    },
]


def main():
    fixtures = Path(os.environ.get("SDPO_FIXTURES") or ROOT / "fixtures")
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else fixtures / "hub_dataset"
    build(out)
    configs = {}
    for name, splits in [(None, ["train", "test"]), ("small", ["train", "validation"]), ("single", ["train"])]:
        key = name or "<default>"
        configs[key] = {
            split: chosen(datasets.load_dataset(str(out), name, split=split)) for split in splits
        }
    mixtures = []
    for mixture in MIXTURES:
        # `path: "."` in the fixture is the dataset directory itself.
        entries = [DatasetConfig(**{**d, "path": str(out)}) for d in mixture["datasets"]]
        result = get_dataset(DatasetMixtureConfig(datasets=entries))["train"]
        mixtures.append({**mixture, "chosen": chosen(result), "columns": result.column_names})
    expected = {
        "format": "hub_dataset/v1",
        "set": "fixtures",
        "versions": {
            "python": platform.python_version(),
            "datasets": datasets.__version__,
            "trl": trl.__version__,
            "pyarrow": pa.__version__,
        },
        "configs": configs,
        "mixtures": mixtures,
    }
    (out / "expected.json").write_text(json.dumps(expected, indent=1) + "\n", encoding="utf-8")
    print(f"{out}: {sum(len(s) for s in configs.values())} config splits, {len(mixtures)} mixtures")


if __name__ == "__main__":
    main()
