"""Writes a randomly initialised checkpoint of a real model's shape, without downloading it.

The configuration is the model's published `config.json` (the fields a Qwen2/Llama needs);
the weights are seeded normal draws (std = initializer_range; norms 1, biases 0) stored in
bfloat16 as sharded safetensors with transformers' index, as the Hub holds such models.

Usage: python bench/random_checkpoint.py SHAPE OUT_DIR [--seed N]
SHAPE: qwen2.5-7b | llama-3.2-3b | qwen2.5-1.5b | qwen2.5-0.5b
"""

import argparse
import json
import os

import torch
from safetensors.torch import save_file

QWEN = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu",
    "attention_dropout": 0.0, "bos_token_id": 151643, "eos_token_id": 151643,
    "initializer_range": 0.02, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
    "sliding_window": 131072, "use_sliding_window": False, "max_window_layers": 28,
    "torch_dtype": "bfloat16", "use_cache": True, "rope_scaling": None,
}
SHAPES = {
    # Qwen/Qwen2.5-7B config.json
    "qwen2.5-7b": dict(QWEN, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                       num_attention_heads=28, num_key_value_heads=4,
                       max_position_embeddings=131072, vocab_size=152064,
                       tie_word_embeddings=False),
    # Qwen/Qwen2.5-0.5B config.json
    "qwen2.5-0.5b": dict(QWEN, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2,
                         max_position_embeddings=32768, vocab_size=151936,
                         tie_word_embeddings=True, max_window_layers=24),
    # Qwen/Qwen2.5-1.5B config.json
    "qwen2.5-1.5b": dict(QWEN, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                         num_attention_heads=12, num_key_value_heads=2,
                         max_position_embeddings=131072, vocab_size=151936,
                         tie_word_embeddings=True, max_window_layers=21),
    # meta-llama/Llama-3.2-3B config.json
    "llama-3.2-3b": {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 28,
        "num_attention_heads": 24, "num_key_value_heads": 8, "head_dim": 128,
        "max_position_embeddings": 131072, "vocab_size": 128256, "tie_word_embeddings": True,
        "initializer_range": 0.02, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
        "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "attention_bias": False, "mlp_bias": False, "bos_token_id": 128000,
        "eos_token_id": 128001, "torch_dtype": "bfloat16",
    },
}
SHARD_BYTES = 4 << 30


def tensors(c):
    """(name, shape, kind) of every tensor, in transformers' order."""
    h, i, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    heads, kv = c["num_attention_heads"], c["num_key_value_heads"]
    d = c.get("head_dim", h // heads)
    qwen = c["model_type"] == "qwen2"
    yield "model.embed_tokens.weight", (v, h), "normal"
    for l in range(c["num_hidden_layers"]):
        p = f"model.layers.{l}."
        yield p + "input_layernorm.weight", (h,), "ones"
        for name, out in [("q_proj", heads * d), ("k_proj", kv * d), ("v_proj", kv * d)]:
            yield p + f"self_attn.{name}.weight", (out, h), "normal"
            if qwen:
                yield p + f"self_attn.{name}.bias", (out,), "zeros"
        yield p + "self_attn.o_proj.weight", (h, heads * d), "normal"
        yield p + "post_attention_layernorm.weight", (h,), "ones"
        yield p + "mlp.gate_proj.weight", (i, h), "normal"
        yield p + "mlp.up_proj.weight", (i, h), "normal"
        yield p + "mlp.down_proj.weight", (h, i), "normal"
    yield "model.norm.weight", (h,), "ones"
    if not c["tie_word_embeddings"]:
        yield "lm_head.weight", (v, h), "normal"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("shape", choices=sorted(SHAPES))
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    c = SHAPES[a.shape]
    os.makedirs(a.out, exist_ok=True)
    # Plan the shards from the shapes, then draw and write one shard at a time (at most one
    # shard's tensors in memory).
    plan, size = [[]], 0
    for name, shape, kind in tensors(c):
        n = 2 * torch.Size(shape).numel()
        if plan[-1] and size + n > SHARD_BYTES:
            plan.append([])
            size = 0
        plan[-1].append((name, shape, kind))
        size += n
    g = torch.Generator().manual_seed(a.seed)
    weight_map, total = {}, 0
    for k, entries in enumerate(plan):
        shard = {}
        for name, shape, kind in entries:
            if kind == "normal":
                t = torch.empty(shape, dtype=torch.bfloat16)
                # Row blocks keep the float32 draw small for the large embeddings.
                for s in range(0, shape[0], 8192):
                    block = torch.randn((min(8192, shape[0] - s),) + shape[1:], generator=g)
                    t[s:s + block.shape[0]] = (block * c["initializer_range"]).to(torch.bfloat16)
            else:
                t = (torch.ones if kind == "ones" else torch.zeros)(shape, dtype=torch.bfloat16)
            shard[name] = t
        file = f"model-{k + 1:05d}-of-{len(plan):05d}.safetensors"
        save_file(shard, os.path.join(a.out, file), metadata={"format": "pt"})
        for name, t in shard.items():
            weight_map[name] = file
            total += t.numel() * 2
    with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(c, f, indent=2)
    print(f"{a.out}: {a.shape}, {total / 1e9:.2f} GB of bfloat16 weights in {len(plan)} shards")


if __name__ == "__main__":
    main()
