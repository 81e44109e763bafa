#!/usr/bin/env python3
"""Writes fixtures/adamw_8bit/: bitsandbytes 0.50.2's 8-bit AdamW on the CPU, for the golden
tests of `optim = "adamw_8bit"` (sdpo-train/tests/adamw_8bit.rs).

Run through tools/make_adamw_8bit_fixtures.sh (the pinned venv of tools/trl-venv.sh plus
bitsandbytes 0.50.2).

Two goldens (fixtures/README.md section 13 specifies every field):

* `steps.json` + `steps.safetensors`: `bitsandbytes.optim.AdamW(..., optim_bits=8)` (what
  transformers builds for `optim="adamw_8bit"`) stepping five parameters of different sizes
  for five steps on seeded gradients, with a learning rate that changes every step, two
  parameter groups (weight decay 0.1 and 0); every parameter and every optimizer state after
  every step. Sizes are picked around `min_8bit_size` (4096): below it bitsandbytes keeps
  float32 moments, from it on 8-bit blockwise ones (blocks of 256, the last one partial here).
  One gradient block is all zeros at step 1 (an all-zero state block: codes 0, absmax 0).
* `trl.json` + `trl_final.safetensors`: TRL 1.16's own `DPOTrainer.train()` with
  `optim="adamw_8bit"` and weight decay on the tiny Llama of fixtures/models/llama, the pairs and
  tokenizer of fixtures/trl_sync, six steps: the train records, a subset of the final weights
  and the final optimizer state of a few parameters (transformers overrides `nn.Embedding`
  weights to 32-bit states).
"""

import json
import sys
from pathlib import Path

import bitsandbytes as bnb
import numpy as np
import torch
from safetensors.torch import save_file

import trl_golden_run

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "fixtures"
OUT = FIXTURES / "adamw_8bit"
POLICY = trl_golden_run.POLICY

VERSIONS = trl_golden_run.versions(bitsandbytes=bnb.__version__)

# ---------------------------------------------------------------------------------------------
# 1. The optimizer alone.

# name -> (shape, weight decay group). 4480 = 17.5 blocks of 256; 4096 is min_8bit_size itself
# (8-bit: bitsandbytes keeps 32-bit states only below it); 4095 and 2048 and 64 stay float32.
PARAMS = {
    "matrix": ([70, 64], 0.1),
    "at_threshold": ([4096], 0.1),
    "below_threshold": ([4095], 0.1),
    "small": ([32, 64], 0.1),
    "no_decay": ([4133], 0.0),
    "bias": ([64], 0.0),
}
STEPS = 5
LRS = [1e-2, 8e-3, 6e-3, 4e-3, 2e-3]
BETAS = (0.9, 0.999)
EPS = 1e-8
# Gradient scale per step (the moments see growing and shrinking gradients).
GRAD_SCALES = [1.0, 0.3, 2.0, 0.05, 1.0]


def state_tensors(opt, p):
    st = opt.state[p]
    out = {"step": int(st["step"])}
    for key in ("state1", "state2", "absmax1", "absmax2"):
        if key in st:
            out[key] = st[key].detach().clone()
    return out


def optimizer_golden():
    gen = torch.Generator().manual_seed(7)
    params = {
        n: torch.nn.Parameter(torch.randn(shape, generator=gen) * 0.5)
        for n, (shape, _) in PARAMS.items()
    }
    groups = [
        {"params": [params[n] for n, (_, wd) in PARAMS.items() if wd > 0], "weight_decay": 0.1},
        {"params": [params[n] for n, (_, wd) in PARAMS.items() if wd == 0], "weight_decay": 0.0},
    ]
    opt = bnb.optim.AdamW(groups, lr=LRS[0], betas=BETAS, eps=EPS, optim_bits=8, is_paged=False)
    tensors = {f"param/0/{n}": p.detach().clone() for n, p in params.items()}
    kinds = {}
    for step in range(1, STEPS + 1):
        for g in opt.param_groups:
            g["lr"] = LRS[step - 1]
        for n, p in params.items():
            grad = torch.randn(p.shape, generator=gen) * GRAD_SCALES[step - 1]
            if step == 1 and n == "matrix":
                grad.view(-1)[256:512] = 0.0  # the second block of 256: an all-zero block
            p.grad = grad
            tensors[f"grad/{step}/{n}"] = grad.clone()
        opt.step()
        for n, p in params.items():
            tensors[f"param/{step}/{n}"] = p.detach().clone()
            st = state_tensors(opt, p)
            assert st["step"] == step, (n, st["step"])
            kinds[n] = "blockwise_8bit" if st["state1"].dtype == torch.uint8 else "float32"
            for key in ("state1", "state2", "absmax1", "absmax2"):
                if key in st:
                    tensors[f"{key}/{step}/{n}"] = st[key].contiguous()
    qmap = opt.name2qmap
    tensors["qmap/dynamic"] = qmap["dynamic"].clone()
    tensors["qmap/udynamic"] = qmap["udynamic"].clone()
    for n, k in kinds.items():
        numel = int(np.prod(PARAMS[n][0]))
        assert (k == "blockwise_8bit") == (numel >= 4096), (n, k)
    save_file(tensors, str(OUT / "steps.safetensors"), metadata={"format": "pt"})
    return {
        "format": "adamw_8bit_steps/v1",
        "set": "fixtures",
        "generator": "tools/make_adamw_8bit_fixtures.py",
        "versions": VERSIONS,
        "optimizer": "bitsandbytes.optim.AdamW(optim_bits=8, is_paged=False)",
        "tensors_file": "adamw_8bit/steps.safetensors",
        "betas": list(BETAS),
        "eps": EPS,
        "min_8bit_size": 4096,
        "block_size": 256,
        "steps": STEPS,
        "learning_rates": LRS,
        "params": {
            n: {"shape": shape, "weight_decay": wd, "state": kinds[n]}
            for n, (shape, wd) in PARAMS.items()
        },
        "zero_gradient_block": {"param": "matrix", "step": 1, "elements": [256, 512]},
    }


# ---------------------------------------------------------------------------------------------
# 2. TRL's DPOTrainer with optim="adamw_8bit".

CONFIG = {
    **trl_golden_run.BASE_CONFIG,
    "weight_decay": 0.05,
    "bf16": False,
    "optim": "adamw_8bit",
}
KEPT = [
    "model.embed_tokens.weight",
    "model.layers.1.self_attn.q_proj.weight",
    "model.layers.1.self_attn.k_proj.weight",
    "model.layers.1.mlp.down_proj.weight",
    "model.layers.1.input_layernorm.weight",
    "lm_head.weight",
]


def trl_golden():
    trainer, opt, records, _ = trl_golden_run.train(FIXTURES, CONFIG, torch.float32)
    assert isinstance(opt, bnb.optim.AdamW), type(opt)
    named = dict(trainer.model.named_parameters())
    tensors = {}
    states = {}
    for n in KEPT:
        p = named[n]
        tensors[f"param/{n}"] = p.detach().clone().contiguous()
        st = state_tensors(opt, p)
        states[n] = "blockwise_8bit" if st["state1"].dtype == torch.uint8 else "float32"
        for key in ("state1", "state2", "absmax1", "absmax2"):
            if key in st:
                tensors[f"{key}/{n}"] = st[key].contiguous()
    assert states["model.embed_tokens.weight"] == "float32", states  # transformers' override
    assert states["lm_head.weight"] == "blockwise_8bit", states
    save_file(tensors, str(OUT / "trl_final.safetensors"), metadata={"format": "pt"})
    return {
        "format": "adamw_8bit_trl/v1",
        "set": "fixtures",
        "generator": "tools/make_adamw_8bit_fixtures.py",
        "versions": VERSIONS,
        "policy_model": POLICY,
        "tokenizer_dir": "trl_sync/tokenizer",
        "train_file": "trl_sync/pairs.jsonl",
        "weights_file": "adamw_8bit/trl_final.safetensors",
        "config": CONFIG,
        "log_history": records,
        "kept_tensors": KEPT,
        "states": states,
    }


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    steps = optimizer_golden()
    (OUT / "steps.json").write_text(json.dumps(steps, indent=1) + "\n")
    run = trl_golden()
    (OUT / "trl.json").write_text(json.dumps(run, indent=1) + "\n")
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {OUT} ({total // 1024} KB)")


if __name__ == "__main__":
    main()
