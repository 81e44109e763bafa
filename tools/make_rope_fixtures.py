"""Tiny checkpoints with the long-context RoPE types their families ship, and their goldens.

Writes fixtures/models/<name>/ in the layout of the fixture set's other tiny models (fixtures
README section 3): config.json, generation_config.json, model.safetensors, golden.json,
golden.safetensors. Run with transformers 5.24.0 and torch 2.9.0 (tools/make_rope_fixtures.sh).

Cases (each checks that its scaling moves the logits of the test input, by rerunning the same
weights with plain RoPE):
  qwen3_rope_yarn        Qwen3 with `yarn` (factor 4, original context 8, so the 12-token
                         input's low frequencies are interpolated; attention factor
                         0.1 ln 4 + 1).
  phi3_rope_longrope     Phi-3 with `longrope`, original context 8 < 12 tokens: the long
                         factors and attention factor sqrt(1 + ln(16) / ln(8)) apply.
  phi3_rope_longrope_short
                         the same with original context 32 > 12: the short factors apply.
"""

import json
import math
import pathlib
import sys

import torch
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForCausalLM

OUT = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "fixtures")
SEQ = 12


def qwen3_yarn():
    return dict(
        model_type="qwen3",
        architectures=["Qwen3ForCausalLM"],
        vocab_size=352,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=32,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        rope_parameters=dict(
            rope_type="yarn",
            rope_theta=10000.0,
            factor=4.0,
            original_max_position_embeddings=8,
        ),
    )


def phi3_longrope(original):
    half = 8  # rotary dim 16 (head_dim 16, partial factor 1) / 2
    return dict(
        model_type="phi3",
        architectures=["Phi3ForCausalLM"],
        vocab_size=320,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        original_max_position_embeddings=original,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        rope_parameters=dict(
            rope_type="longrope",
            rope_theta=10000.0,
            short_factor=[1.0 + 0.25 * i for i in range(half)],
            long_factor=[1.0 + 2.0 * i for i in range(half)],
        ),
    )


CASES = {
    "qwen3_rope_yarn": qwen3_yarn(),
    "phi3_rope_longrope": phi3_longrope(8),
    "phi3_rope_longrope_short": phi3_longrope(32),
}


def randomise(model, seed):
    """The fixture set's convention: every parameter drawn, none trivially 0 or 1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and p.dim() == 1:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif "embed" in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            elif p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))


def build(config_dict, seed):
    config = AutoConfig.for_model(**config_dict, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="eager")
    randomise(model, seed)
    return model.eval()


def inputs(vocab, seed):
    g = torch.Generator().manual_seed(seed + 1)
    ids = torch.randint(3, vocab, (2, SEQ), generator=g)
    mask = torch.ones(2, SEQ, dtype=torch.long)
    mask[1, 8:] = 0
    ids[1, 8:] = 0
    return ids, mask


def main():
    for seed, (name, config_dict) in enumerate(CASES.items(), start=2026):
        model = build(config_dict, seed)
        ids, mask = inputs(config_dict["vocab_size"], seed)
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            alone = model(input_ids=ids[1:, :8], attention_mask=mask[1:, :8]).logits
        logits = out.logits
        # The scaling must matter: the same weights with plain RoPE give other logits.
        plain_dict = dict(config_dict)
        plain_dict["rope_parameters"] = dict(rope_type="default", rope_theta=10000.0)
        plain = build(plain_dict, seed)
        plain.load_state_dict(model.state_dict())
        with torch.no_grad():
            moved = (plain(input_ids=ids, attention_mask=mask).logits - logits)[mask.bool()].abs().max().item()
        assert moved > 1e-2, f"{name}: the RoPE scaling does not move the logits ({moved})"
        logps = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None])[..., 0]
        loss_mask = mask[:, 1:]
        d = OUT / "models" / name
        d.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(d, safe_serialization=True)
        for f in d.glob("*.json"):
            if f.name not in ("config.json", "generation_config.json"):
                f.unlink()
        tensors = {
            "input_ids": ids.contiguous(),
            "attention_mask": mask.contiguous(),
            "logits": logits.contiguous(),
            "next_token_logps": logps.contiguous(),
            "loss_mask": loss_mask.contiguous(),
        }
        for i, h in enumerate(out.hidden_states):
            tensors[f"hidden_states.{i}"] = h.contiguous()
        save_file(tensors, str(d / "golden.safetensors"))
        golden = {
            "format": "tiny_model_golden/v1",
            "set": "fixtures",
            "model": name,
            "model_dir": f"models/{name}",
            "architecture": config_dict["architectures"][0],
            "generator": "tools/make_rope_fixtures.py",
            "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__},
            "attn_implementation": "eager",
            "dtype": "float32",
            "vocab_size": config_dict["vocab_size"],
            "pad_token_id": 0,
            "input_ids": ids.tolist(),
            "attention_mask": mask.tolist(),
            "logits": logits.tolist(),
            "next_token_logps": logps.tolist(),
            "loss_mask": loss_mask.tolist(),
            "next_token_logps_masked": (logps * loss_mask).tolist(),
            "padding_consistency_max_abs_diff": (logits[1, :8] - alone[0]).abs().max().item(),
            "num_hidden_states": len(out.hidden_states),
            "rope_scaling_moves_logits_by": moved,
        }
        (d / "golden.json").write_text(json.dumps(golden) + "\n")
        print(f"{name}: scaling moves the logits by {moved:.3f}")


main()
