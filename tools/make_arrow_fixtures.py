#!/usr/bin/env python3
"""Writes fixtures/arrow/: the same preference pairs as JSONL, as Parquet written by pyarrow and
by `datasets`, and as `datasets` `save_to_disk` directories, for sdpo-data's columnar tests; and
the Parquet/Arrow cases of sdpo-data/tests/bad_inputs/.

Run through tools/make_arrow_fixtures.sh (it makes the pinned venv). Deterministic: running it
again writes the same rows (Parquet/Arrow bytes may differ only in writer metadata).

Layout (all under fixtures/arrow/):
  {standard,conversational,implicit}.jsonl       the reference rows (json.dumps, one per line)
  {standard,conversational,implicit}.parquet     pyarrow.parquet.write_table, zstd, 2 row groups,
                                                 plus extra columns
  {standard,conversational,implicit}_datasets.parquet  datasets.Dataset.to_parquet (snappy, as
                                                 the Hub's files)
  {standard,conversational,implicit}_disk/       datasets.Dataset.save_to_disk (Arrow IPC stream),
                                                 2 shards
  hub/data/{train-0000x-of-00002,test-00000-of-00001}.parquet   Hub layout: splits by file name
  dict/                                          DatasetDict.save_to_disk with train and test
  mapped.parquet                                 columns question/response_j/response_k + extras
  mapped.jsonl                                   the same rows with keys prompt/chosen/rejected

and the quickstart's data as a Hub-layout Parquet dataset, written by `datasets` from
examples/quickstart/{train,eval}.jsonl (run examples/quickstart/make_data.py first if changed):
  examples/quickstart/parquet/data/train-00000-of-00001.parquet   (train.jsonl)
  examples/quickstart/parquet/data/test-00000-of-00001.parquet    (eval.jsonl)
"""

import json
import shutil
import sys
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "fixtures" / "arrow"
BAD = ROOT / "sdpo-data" / "tests" / "bad_inputs"


def msg(role, content, **extra):
    return {"role": role, "content": content, **extra}


STANDARD = [
    {"prompt": "The sky is", "chosen": " blue.", "rejected": " green."},
    {"prompt": "Translate 'chat' to English:", "chosen": " cat", "rejected": " dog"},
    {"prompt": "", "chosen": "An empty prompt is allowed.", "rejected": "Really?"},
    {"prompt": "Unicode: café, 東京, emoji 🚀 →", "chosen": " naïve résumé ✓", "rejected": " ✗ wrong"},
    {"prompt": "Two plus two equals", "chosen": " four<|im_end|>", "rejected": " five"},
    {"prompt": "Long-ish prompt " + "word " * 40, "chosen": " short", "rejected": " also short but longer"},
    {"prompt": "Line\nbreaks\tand tabs:", "chosen": "\n- a\n- b", "rejected": " none"},
]

CONVERSATIONAL = [
    {
        "prompt": [msg("user", "What color is the sky?")],
        "chosen": [msg("assistant", "It is blue.")],
        "rejected": [msg("assistant", "It is green.")],
    },
    {
        "prompt": [msg("system", "You are terse."), msg("user", "Capital of France?")],
        "chosen": [msg("assistant", "Paris.")],
        "rejected": [msg("assistant", "Lyon, I think, but I am not sure at all.")],
    },
    {
        "prompt": [msg("user", "Hi"), msg("assistant", "Hello! How can I help?"), msg("user", "Tell me a joke about 東京.")],
        "chosen": [msg("assistant", "Why did the train in 東京 never run late? It had a Shinkansen of humour.")],
        "rejected": [msg("assistant", "No.")],
    },
    {
        "prompt": [msg("user", "Continue the list: 1, 2,")],
        "chosen": [msg("assistant", " 3, 4")],
        "rejected": [msg("assistant", " 7, 9")],
    },
    {
        "prompt": [msg("user", "Say something"), msg("assistant", "Sure:")],
        "chosen": [msg("assistant", " something kind")],
        "rejected": [msg("assistant", " something rude")],
    },
]

IMPLICIT = [
    {"chosen": "Q: What is 2+2? A: 4", "rejected": "Q: What is 2+2? A: 5"},
    {"chosen": "Human: hi\n\nAssistant: Hello there!", "rejected": "Human: hi\n\nAssistant: Go away."},
    {
        "chosen": [msg("user", "Name a fruit."), msg("assistant", "An apple.")],
        "rejected": [msg("user", "Name a fruit."), msg("assistant", "A chair.")],
    },
    {"chosen": "Prefix shared, then yes", "rejected": "Prefix shared, then no"},
    {
        "chosen": [msg("system", "Be brief."), msg("user", "2+2?"), msg("assistant", "4")],
        "rejected": [msg("system", "Be brief."), msg("user", "2+2?"), msg("assistant", "Let me think about that for a long while.")],
    },
]

FORMATS = {"standard": STANDARD, "conversational": CONVERSATIONAL, "implicit": IMPLICIT}


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def with_extras(rows):
    """Extra columns a Hub dataset has (ids, scores): ignored by the reader."""
    return [{"id": f"row-{i}", "score_chosen": 8.5, "score_rejected": 3.0 + i, **row} for i, row in enumerate(rows)]


def implicit_tables(rows):
    """Implicit-prompt rows mix strings and conversations, which one Arrow column cannot hold:
    strings go to one file, conversations to another."""
    text = [r for r in rows if isinstance(r["chosen"], str)]
    conv = [r for r in rows if not isinstance(r["chosen"], str)]
    return text, conv


def main():
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    for name, rows in FORMATS.items():
        parts = {name: rows}
        if name == "implicit":
            text, conv = implicit_tables(rows)
            parts = {"implicit": text, "implicit_conversational": conv}
        for part, part_rows in parts.items():
            write_jsonl(OUT / f"{part}.jsonl", part_rows)
            table = pa.Table.from_pylist(with_extras(part_rows))
            # Two row groups, so row numbers must run on across row groups.
            pq.write_table(
                table, OUT / f"{part}.parquet", row_group_size=max(1, (len(part_rows) + 1) // 2), compression="zstd"
            )
            ds = datasets.Dataset.from_list(with_extras(part_rows))
            ds.to_parquet(str(OUT / f"{part}_datasets.parquet"))
            ds.save_to_disk(str(OUT / f"{part}_disk"), num_shards=2)

    # Hub layout: train in two shards, test in one.
    hub = OUT / "hub" / "data"
    hub.mkdir(parents=True)
    train, test = STANDARD[:5], STANDARD[5:]
    write_jsonl(OUT / "hub_train.jsonl", train)
    write_jsonl(OUT / "hub_test.jsonl", test)
    pq.write_table(pa.Table.from_pylist(train[:3]), hub / "train-00000-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(train[3:]), hub / "train-00001-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(test), hub / "test-00000-of-00001.parquet")
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(train), "test": datasets.Dataset.from_list(test)}
    ).save_to_disk(str(OUT / "dict"))

    # Column mapping: the names of lvwerra/stack-exchange-paired.
    mapped = [
        {"qid": i, "question": r["prompt"], "response_j": r["chosen"], "response_k": r["rejected"], "date": "2023-01-01"}
        for i, r in enumerate(STANDARD)
    ]
    write_jsonl(OUT / "mapped.jsonl", STANDARD)
    pq.write_table(pa.Table.from_pylist(mapped), OUT / "mapped.parquet")

    write_bad_inputs()
    write_quickstart()
    print(f"wrote {sum(1 for _ in OUT.rglob('*') if _.is_file())} files under {OUT.relative_to(ROOT)}", file=sys.stderr)


def write_quickstart():
    quickstart = ROOT / "examples" / "quickstart"
    out = quickstart / "parquet" / "data"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for src, split in (("train.jsonl", "train"), ("eval.jsonl", "test")):
        with open(quickstart / src, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        datasets.Dataset.from_list(rows).to_parquet(str(out / f"{split}-00000-of-00001.parquet"))


def write_bad_inputs():
    """Parquet/Arrow cases of the bad-input corpus (the JSON ones are hand-written)."""
    good = STANDARD[:3]
    # Truncated: a valid file cut in half (the footer is gone).
    pq.write_table(pa.Table.from_pylist(good), BAD / "truncated.parquet")
    data = (BAD / "truncated.parquet").read_bytes()
    (BAD / "truncated.parquet").write_bytes(data[: len(data) // 2])
    # Empty: zero bytes.
    (BAD / "empty.parquet").write_bytes(b"")
    # Wrong column type: `chosen` holds integers in row 1 -> the column is int64 throughout.
    pq.write_table(
        pa.table({"prompt": ["a", "b", "c"], "chosen": pa.array([1, 2, 3], pa.int64()), "rejected": ["x", "y", "z"]}),
        BAD / "wrong_type_column.parquet",
    )
    # Nulls: `rejected` is null in row 3 (second row group, row_group_size 2).
    pq.write_table(
        pa.table({"prompt": ["p0", "p1", "p2", "p3"], "chosen": [" c0", " c1", " c2", " c3"], "rejected": [" r0", " r1", " r2", None]}),
        BAD / "null_rejected.parquet",
        row_group_size=2,
    )
    # A codec Hub files do not use and sdpo-data is built without (gzip).
    pq.write_table(pa.Table.from_pylist(good), BAD / "gzip_codec.parquet", compression="gzip")
    # Missing column: no `rejected`.
    pq.write_table(pa.table({"prompt": ["a"], "chosen": [" b"], "reject": [" c"]}), BAD / "missing_column.parquet")
    # Arrow IPC stream (as datasets writes it) with a null message content in row 1.
    table = pa.Table.from_pylist(
        [
            {"prompt": [msg("user", "Hi")], "chosen": [msg("assistant", "Hello")], "rejected": [msg("assistant", "Bye")]},
            {"prompt": [msg("user", "Hi")], "chosen": [msg("assistant", None)], "rejected": [msg("assistant", "Bye")]},
        ]
    )
    with pa.OSFile(str(BAD / "null_content.arrow"), "wb") as sink:
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    # Arrow IPC truncated mid-batch.
    with pa.OSFile(str(BAD / "truncated.arrow"), "wb") as sink:
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    data = (BAD / "truncated.arrow").read_bytes()
    (BAD / "truncated.arrow").write_bytes(data[: len(data) - 40])


if __name__ == "__main__":
    main()
