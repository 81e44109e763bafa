#!/usr/bin/env python3
"""Reference log-probs for sdpo-rs computed by another engine.

Reads the rows `sdpo export-pairs --config RUN --out PAIRS` wrote (the exact token ids and
completion masks of every pair, so the tokens cannot drift), runs the reference with
transformers (`device_map="auto"` across the GPUs it sees, or the CPU) or, with `--engine vllm`,
with vLLM's `prompt_logprobs`, and writes each split's cache in sdpo-rs's open format
(docs/reference-cache.md) as OUTPUT_DIR/ref_logps_cache/{split}-content-{16 digits}.safetensors.
`sdpo train` with `precompute_ref_log_probs = true` and the same `output_dir` then reads it: it
checks the content key (the rows, the truncation, the reference's weight files) and reports
that another program computed the numbers.

Usage:
    tools/ref_logps.py --pairs PAIRS --reference MODEL_DIR --output-dir RUN_OUTPUT_DIR \
        [--engine transformers|vllm] [--dtype float32|bfloat16] [--batch-size 8] \
        [--tensor-parallel-size 1] [--accept-reference]

Needs torch, safetensors and transformers (or vllm). MODEL_DIR is the reference in Hugging Face
layout: the same files the run's `ref_model_name_or_path` (or `model_name_or_path`) names, since
their SHA-256 is part of the key; `--accept-reference` writes the run's expected identity
instead, for a copy of the same weights stored differently (you vouch for it).
"""

import argparse
import hashlib
import json
import os
import pathlib
import struct
import sys

FORMAT = "sdpo-ref-logps"
FORMAT_VERSION = "2"
PAIRS_FORMAT = "sdpo-pairs"
KEY_PARTS = [
    "rows", "max_length", "max_prompt_length", "truncation_mode", "reference",
    "logps_path", "row_layout", "matmul_precision", "ref_dtype",
]
CONTENT_PARTS = 5


def digest(preamble, parts):
    h = hashlib.sha256(preamble.encode())
    for name, value in parts:
        h.update(f"{name}={value}\n".encode())
    return h.hexdigest()


def keys(parts):
    """(key, content key) of the nine parts, as docs/reference-cache.md defines them."""
    ordered = [(name, parts[name]) for name in KEY_PARTS]
    return (digest("sdpo-ref-logps/2 key\n", ordered),
            digest("sdpo-ref-logps/2 content\n", ordered[:CONTENT_PARTS]))


def reference_identity(model_dir):
    """SHA-256 over config.json then every *.safetensors file in name order: `name\\n`, the
    length in decimal, `\\n`, the bytes."""
    model_dir = pathlib.Path(model_dir)
    files = [model_dir / "config.json"] + sorted(model_dir.glob("*.safetensors"))
    h = hashlib.sha256()
    for path in files:
        h.update(f"{path.name}\n{path.stat().st_size}\n".encode())
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def read_pairs(path):
    """The header and the pairs of one exported split; the rows' SHA-256 is checked."""
    with open(path, encoding="utf-8") as f:
        header = json.loads(f.readline())
        if header.get("format") != PAIRS_FORMAT or header.get("format_version") != 1:
            sys.exit(f"{path}: not an `sdpo export-pairs` file of format version 1")
        pairs = [json.loads(line) for line in f if line.strip()]
    if len(pairs) != header["pairs_total"]:
        sys.exit(f"{path}: {len(pairs)} pairs, the header says {header['pairs_total']}")
    h = hashlib.sha256()
    for i, pair in enumerate(pairs):
        if pair["pair"] != i:
            sys.exit(f"{path}: line {i + 2} is pair {pair['pair']}, expected {i}")
        for side in ("chosen", "rejected"):
            ids, mask = pair[f"{side}_ids"], pair[f"{side}_completion_mask"]
            if len(ids) != len(mask):
                sys.exit(f"{path}: pair {i}: {side} ids and mask differ in length")
            h.update(struct.pack("<I", len(ids)))
            h.update(struct.pack(f"<{len(ids)}I", *ids))
            h.update(bytes(mask))
    if h.hexdigest() != header["rows"]:
        sys.exit(f"{path}: the rows do not hash to the header's `rows`: the file was changed")
    return header, pairs


def scored(ids, mask):
    """Positions whose next token is a completion token, and that token."""
    return [(pos, ids[pos + 1]) for pos in range(len(ids) - 1) if mask[pos + 1]]


def rows_of(pairs):
    for pair in pairs:
        for side in ("chosen", "rejected"):
            yield pair[f"{side}_ids"], pair[f"{side}_completion_mask"]


def transformers_logps(args, pairs):
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    kwargs = {"dtype": dtype}
    if torch.cuda.is_available():
        kwargs["device_map"] = "auto"
    model = AutoModelForCausalLM.from_pretrained(args.reference, **kwargs).eval()
    device = next(model.parameters()).device
    rows = list(rows_of(pairs))
    out = []
    with torch.inference_mode():
        for start in range(0, len(rows), args.batch_size):
            batch = rows[start:start + args.batch_size]
            width = max(len(ids) for ids, _ in batch)
            input_ids = torch.zeros((len(batch), width), dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            for r, (ids, _) in enumerate(batch):
                input_ids[r, :len(ids)] = torch.tensor(ids)
                attention[r, :len(ids)] = 1
            logits = model(input_ids=input_ids.to(device),
                           attention_mask=attention.to(device)).logits.float()
            logps = torch.log_softmax(logits, dim=-1).cpu()
            for r, (ids, mask) in enumerate(batch):
                out.append([logps[r, pos, tok].item() for pos, tok in scored(ids, mask)])
    producer = f"tools/ref_logps.py transformers {transformers.__version__} torch {torch.__version__}"
    return out, producer


def vllm_logps(args, pairs):
    import vllm
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    llm = LLM(model=args.reference, dtype=args.dtype,
              tensor_parallel_size=args.tensor_parallel_size)
    rows = list(rows_of(pairs))
    prompts = [TokensPrompt(prompt_token_ids=ids) for ids, _ in rows]
    results = llm.generate(prompts, SamplingParams(max_tokens=1, prompt_logprobs=0))
    out = []
    for (ids, mask), result in zip(rows, results):
        # prompt_logprobs[i] holds token i's log-prob given tokens < i (None for i = 0).
        out.append([result.prompt_logprobs[pos + 1][tok].logprob for pos, tok in scored(ids, mask)])
    return out, f"tools/ref_logps.py vllm {vllm.__version__}"


def write_cache(path, parts, header, values, producer):
    import torch
    from safetensors.torch import save_file

    key, content_key = keys(parts)
    pairs_total = header["pairs_total"]
    tensors = {}
    for side, name in enumerate(("chosen", "rejected")):
        per_pair = values[side::2]
        flat = [v for pair in per_pair for v in pair]
        offsets = [0]
        for pair in per_pair:
            offsets.append(offsets[-1] + len(pair))
        tensors[f"{name}_logps"] = torch.tensor(flat, dtype=torch.float32)
        tensors[f"{name}_offsets"] = torch.tensor(offsets, dtype=torch.int64)
    metadata = dict(parts)
    metadata.update({
        "format": FORMAT, "format_version": FORMAT_VERSION, "key": key,
        "content_key": content_key, "split": header["split"],
        "pairs_total": str(pairs_total), "first_pair": "0", "pair_count": str(pairs_total),
        "shard": "0/1", "producer": producer,
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", required=True, help="the directory `sdpo export-pairs` wrote")
    p.add_argument("--reference", required=True, help="the reference model directory")
    p.add_argument("--output-dir", required=True, help="the run's output_dir")
    p.add_argument("--engine", choices=["transformers", "vllm"], default="transformers")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--batch-size", type=int, default=8, help="rows per forward (transformers)")
    p.add_argument("--tensor-parallel-size", type=int, default=1, help="GPUs per model (vLLM)")
    p.add_argument("--accept-reference", action="store_true",
                   help="write the run's expected reference identity without checking it")
    args = p.parse_args()

    identity = None
    files = sorted(pathlib.Path(args.pairs).glob("*.jsonl"))
    if not files:
        sys.exit(f"{args.pairs}: no .jsonl files (run `sdpo export-pairs --out {args.pairs}`)")
    for path in files:
        header, pairs = read_pairs(path)
        expected = header["expected_reference"]
        if args.accept_reference:
            identity = expected
        else:
            identity = identity or reference_identity(args.reference)
            if identity != expected:
                sys.exit(f"{args.reference}: its weight files hash to {identity}, but the run "
                         f"names a reference hashing to {expected} (see --accept-reference)")
        compute = vllm_logps if args.engine == "vllm" else transformers_logps
        values, producer = compute(args, pairs)
        parts = {name: header[name] for name in KEY_PARTS[:CONTENT_PARTS] if name != "reference"}
        parts["reference"] = identity
        parts.update({
            "logps_path": args.engine, "row_layout": "pairs",
            "matmul_precision": "bf16" if args.dtype == "bfloat16" else "f32",
            "ref_dtype": "bfloat16" if args.dtype == "bfloat16" else "none",
        })
        _, content_key = keys(parts)
        if content_key != header["content_key"]:
            sys.exit(f"{path}: the content key computed here differs from the header's")
        out = (pathlib.Path(args.output_dir) / "ref_logps_cache"
               / f"{header['split']}-content-{content_key[:16]}.safetensors")
        write_cache(out, parts, header, values, producer)
        print(out)


if __name__ == "__main__":
    main()
