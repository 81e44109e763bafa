#!/usr/bin/env python3
"""Write a variant of the fixture set: same layout, other cases, same truths.

Usage: tools/make-variant-fixtures.py [--new-chat] OUT_DIR [SRC_DIR]
       (SRC_DIR defaults to the repository's fixtures/)

Golden tests must derive every expectation from the fixture files, so that a held-out set with
the same layout passes too. This script makes such a set from ours without any oracle, using
only transformations that keep every golden value true:

* dpo_loss.json: cases reversed and every 5th dropped; bco sequences reversed.
* sdpo_mask.json: cases reversed; within each case the batch rows reversed (selection and sums
  are per row); two thresholds dropped (from `thresholds` and every case's `results`).
* sdpo_e2e.json: the three pairs reversed (every [B] and [B][T] field, and each result's
  per-pair fields); `loss_mean` and the gradients are means over pairs, so they stay; results
  reversed.
* models/<name>/golden.json and golden.safetensors: the two batch rows swapped (the padded row
  comes first).
* smollm2/golden.json: prompts reversed and renamed; tokenizer_golden.json: cases reversed,
  every 4th dropped.

With --new-chat (needs the Python packages `tokenizers` and `jinja2`), the chat prompt of
smollm2/golden.json is replaced by another conversation (system turn, two user turns, an
assistant turn), rendered with the tokenizer_config.json chat template by jinja2 the way
transformers' `apply_chat_template` does and tokenized by the Python `tokenizers` library: an
independent oracle for the data crate's chat tests. The prompt's model outputs
(`next_token_logp`, `top5_*`) are dropped, so that variant is for the tokenizer/template tests
(sdpo-data), not for the SmolLM2 weight test.

Then run the tests with SDPO_FIXTURES=OUT_DIR. Standard library only, except --new-chat.
"""

import json
import shutil
import struct
import sys
from pathlib import Path


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def dump(path, value):
    # allow_nan=False: the fixtures are strict JSON.
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, allow_nan=False)


def mark(doc):
    if "set" in doc:
        doc["set"] = "variant"


def dpo_loss(out):
    path = out / "dpo_loss.json"
    doc = load(path)
    doc["cases"] = [c for i, c in enumerate(doc["cases"]) if i % 5 != 4][::-1]
    doc["bco_sequences"] = doc["bco_sequences"][::-1]
    mark(doc)
    dump(path, doc)
    return f"dpo_loss.json: {len(doc['cases'])} cases (reversed, every 5th dropped)"


def sdpo_mask(out):
    path = out / "sdpo_mask.json"
    doc = load(path)
    drop = {doc["thresholds"][1], doc["thresholds"][-2]}
    doc["thresholds"] = [q for q in doc["thresholds"] if q not in drop]
    row_keys = [
        "chosen_threshold", "rejected_threshold", "chosen_kept_mask", "rejected_kept_mask",
        "policy_chosen_sum", "policy_rejected_sum", "ref_chosen_sum", "ref_rejected_sum",
    ]
    for case in doc["cases"]:
        for key in case["inputs"]:
            case["inputs"][key] = case["inputs"][key][::-1]
        for block in case["scores"].values():
            for key in block:
                block[key] = block[key][::-1]
        case["results"] = [r for r in case["results"] if r["threshold"] not in drop]
        for result in case["results"]:
            for name, block in result.items():
                if name == "threshold":
                    continue
                for key in row_keys:
                    block[key] = block[key][::-1]
                for dpo in block["dpo"]:
                    for key in ["logits", "losses", "chosen_rewards", "rejected_rewards"]:
                        dpo[key] = dpo[key][::-1]
    doc["cases"] = doc["cases"][::-1]
    mark(doc)
    dump(path, doc)
    return (f"sdpo_mask.json: {len(doc['cases'])} cases with rows reversed, "
            f"thresholds {doc['thresholds']}")


def sdpo_e2e(out):
    path = out / "sdpo_e2e.json"
    doc = load(path)
    batch = len(doc["prompts"])
    for key in ["prompts", "chosen_completions", "rejected_completions", "chosen_loss_mask",
                "rejected_loss_mask", "policy_chosen_logps", "policy_rejected_logps",
                "ref_chosen_logps", "ref_rejected_logps"]:
        assert len(doc[key]) == batch, key
        doc[key] = doc[key][::-1]
    for side in ["chosen", "rejected"]:
        for key in doc[side]:
            doc[side][key] = doc[side][key][::-1]
    for result in doc["results"]:
        for key, value in result.items():
            if isinstance(value, list):
                assert len(value) == batch, key
                result[key] = value[::-1]
    doc["results"] = doc["results"][::-1]
    mark(doc)
    dump(path, doc)
    return f"sdpo_e2e.json: {batch} pairs reversed"


def swap_safetensors_rows(path):
    """Reverses the leading (batch) dimension of every tensor of a safetensors file."""
    raw = bytearray(path.read_bytes())
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + header_len])
    base = 8 + header_len
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        rows = info["shape"][0]
        data = bytes(raw[base + start:base + end])
        size = len(data) // rows
        chunks = [data[i * size:(i + 1) * size] for i in range(rows)]
        raw[base + start:base + end] = b"".join(chunks[::-1])
    path.write_bytes(bytes(raw))


def models(out):
    done = []
    for model in sorted((out / "models").iterdir()):
        golden = model / "golden.json"
        if not golden.is_file():
            continue
        doc = load(golden)
        for key in ["input_ids", "attention_mask", "logits", "next_token_logps", "loss_mask",
                    "next_token_logps_masked"]:
            doc[key] = doc[key][::-1]
        mark(doc)
        dump(golden, doc)
        swap_safetensors_rows(model / "golden.safetensors")
        done.append(model.name)
    return f"models: batch rows swapped in {done}"


def smollm2(out):
    path = out / "smollm2" / "golden.json"
    doc = load(path)
    doc["prompts"] = doc["prompts"][::-1]
    for p in doc["prompts"]:
        p["id"] = f"variant-{p['id']}"
    mark(doc)
    dump(path, doc)
    path = out / "tokenizer_golden.json"
    doc = load(path)
    doc["cases"] = [c for i, c in enumerate(doc["cases"]) if i % 4 != 3][::-1]
    mark(doc)
    dump(path, doc)
    return f"smollm2 prompts reversed and renamed; tokenizer_golden: {len(doc['cases'])} cases"


def new_chat(out):
    import jinja2.sandbox
    import tokenizers

    config = load(out / "smollm2" / "tokenizer_config.json")
    tokenizer = tokenizers.Tokenizer.from_file(str(out / "smollm2" / "tokenizer.json"))
    messages = [
        {"role": "system", "content": "You answer in one short sentence."},
        {"role": "user", "content": "Name a prime number above 10."},
        {"role": "assistant", "content": "Thirteen."},
        {"role": "user", "content": "And one below 10?"},
        {"role": "assistant", "content": "Seven is prime: 7 = 7 × 1."},
    ]
    # transformers' settings for chat templates.
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    template = env.from_string(config["chat_template"])
    specials = {k: config[k] for k in ["bos_token", "eos_token", "pad_token", "unk_token"]
                if isinstance(config.get(k), str)}
    text = template.render(messages=messages, add_generation_prompt=False, **specials)
    ids = tokenizer.encode(text, add_special_tokens=True).ids
    path = out / "smollm2" / "golden.json"
    doc = load(path)
    chats = [p for p in doc["prompts"] if p.get("messages")]
    assert len(chats) == 1
    chat = chats[0]
    for key in list(chat):
        if key not in ("id", "kind"):
            del chat[key]
    chat.update({"messages": messages, "text": text, "input_ids": ids,
                 "tokens": [tokenizer.id_to_token(i) for i in ids]})
    dump(path, doc)
    return f"smollm2 chat prompt replaced: {len(messages)} messages, {len(ids)} tokens"


def token_methods(out):
    path = out / "token_methods.json"
    doc = load(path)
    # Every third case dropped (each method keeps some), the rest reversed, and in each case
    # the pairs of the batch reversed: every per-pair field leads with the batch index.
    doc["cases"] = [c for i, c in enumerate(doc["cases"]) if i % 3 != 2][::-1]
    for case in doc["cases"]:
        for block in (case["inputs"], case["expected"]):
            for key, value in block.items():
                if isinstance(value, list):
                    block[key] = value[::-1]
        layout = case.get("authors_layout")
        if layout:
            layout["prompt_lengths"] = layout["prompt_lengths"][::-1]
    mark(doc)
    dump(path, doc)
    return f"token_methods.json: {len(doc['cases'])} cases (reversed, every 3rd dropped, pairs reversed)"


def main():
    args = sys.argv[1:]
    steps = [dpo_loss, sdpo_mask, sdpo_e2e, models, smollm2, token_methods]
    if args and args[0] == "--new-chat":
        args = args[1:]
        steps.append(new_chat)
    if len(args) not in (1, 2):
        sys.exit(__doc__)
    out = Path(args[0])
    src = Path(args[1]) if len(args) == 2 else Path(__file__).resolve().parent.parent / "fixtures"
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(src, out)
    for step in steps:
        print(step(out))
    print(f"variant fixture set in {out}: run the tests with SDPO_FIXTURES={out}")


if __name__ == "__main__":
    main()
