#!/usr/bin/env python3
"""Writes fixtures/bf16_weights/: full fine-tuning of a model loaded in bfloat16, as PyTorch and
TRL 1.16 run it, for the golden tests of `dtype = "bfloat16"` without adapters
(sdpo-train/tests/bf16_weights.rs).

Run through tools/make_bf16_weights_fixtures.sh (the pinned venv of tools/trl-venv.sh).

Two goldens (fixtures/README.md section 14 specifies every field):

* `steps.json` + `steps.safetensors`: `torch.optim.AdamW(fused=True)` (transformers'
  `optim="adamw_torch_fused"`, its default) stepping bfloat16 parameters of three shapes for five
  steps on seeded bfloat16 gradients, a learning rate that changes every step, two weight-decay
  groups; every parameter and both moments (bfloat16, as torch keeps them) after every step.
* `trl.json` + `trl_final.safetensors`: TRL 1.16's own `DPOTrainer.train()` on the tiny Llama of
  fixtures/models/llama loaded with `dtype=torch.bfloat16` (what `model_init_kwargs={"dtype":
  "bfloat16"}` does), `bf16=True`, `optim="adamw_torch_fused"`, weight decay, the pairs and
  tokenizer of fixtures/trl_sync, six steps: the train records, a subset of the final weights
  and their moments, all bfloat16.
"""

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

import trl_golden_run

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "fixtures"
OUT = FIXTURES / "bf16_weights"
POLICY = trl_golden_run.POLICY

VERSIONS = trl_golden_run.versions()

# ---------------------------------------------------------------------------------------------
# 1. The optimizer alone.

# name -> (shape, weight decay).
PARAMS = {
    "matrix": ([48, 40], 0.1),
    "tall": ([300, 8], 0.1),
    "vector": ([37], 0.0),
}
STEPS = 5
LRS = [1e-2, 8e-3, 6e-3, 4e-3, 2e-3]
BETAS = (0.9, 0.999)
EPS = 1e-8
GRAD_SCALES = [1.0, 0.3, 2.0, 0.05, 1.0]


def optimizer_golden():
    gen = torch.Generator().manual_seed(11)
    params = {
        n: torch.nn.Parameter((torch.randn(shape, generator=gen) * 0.5).to(torch.bfloat16))
        for n, (shape, _) in PARAMS.items()
    }
    groups = [
        {"params": [params[n] for n, (_, wd) in PARAMS.items() if wd > 0], "weight_decay": 0.1},
        {"params": [params[n] for n, (_, wd) in PARAMS.items() if wd == 0], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=LRS[0], betas=BETAS, eps=EPS, fused=True)
    tensors = {f"param/0/{n}": p.detach().clone() for n, p in params.items()}
    for step in range(1, STEPS + 1):
        for g in opt.param_groups:
            g["lr"] = LRS[step - 1]
        for n, p in params.items():
            grad = (torch.randn(p.shape, generator=gen) * GRAD_SCALES[step - 1]).to(torch.bfloat16)
            p.grad = grad
            tensors[f"grad/{step}/{n}"] = grad.clone()
        opt.step()
        for n, p in params.items():
            st = opt.state[p]
            assert int(st["step"]) == step
            assert p.dtype == st["exp_avg"].dtype == st["exp_avg_sq"].dtype == torch.bfloat16
            tensors[f"param/{step}/{n}"] = p.detach().clone()
            tensors[f"exp_avg/{step}/{n}"] = st["exp_avg"].clone()
            tensors[f"exp_avg_sq/{step}/{n}"] = st["exp_avg_sq"].clone()
    save_file(tensors, str(OUT / "steps.safetensors"), metadata={"format": "pt"})
    return {
        "format": "bf16_weights_steps/v1",
        "set": "fixtures",
        "generator": "tools/make_bf16_weights_fixtures.py",
        "versions": VERSIONS,
        "optimizer": "torch.optim.AdamW(fused=True), bfloat16 parameters, gradients and moments",
        "tensors_file": "bf16_weights/steps.safetensors",
        "betas": list(BETAS),
        "eps": EPS,
        "steps": STEPS,
        "learning_rates": LRS,
        "params": {n: {"shape": shape, "weight_decay": wd} for n, (shape, wd) in PARAMS.items()},
    }


# ---------------------------------------------------------------------------------------------
# 2. TRL's DPOTrainer on a model loaded in bfloat16.

CONFIG = {
    **trl_golden_run.BASE_CONFIG,
    "weight_decay": 0.05,
    "bf16": True,
    "optim": "adamw_torch_fused",
}
KEPT = [
    "model.embed_tokens.weight",
    "model.layers.1.self_attn.q_proj.weight",
    "model.layers.1.mlp.down_proj.weight",
    "lm_head.weight",
]


def trl_golden():
    trainer, opt, records, initial = trl_golden_run.train(FIXTURES, CONFIG, torch.bfloat16)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults.get("fused"), opt
    named = dict(trainer.model.named_parameters())
    tensors = {}
    moved = {}
    for n in KEPT:
        p = named[n]
        st = opt.state[p]
        assert p.dtype == st["exp_avg"].dtype == torch.bfloat16, (n, p.dtype)
        tensors[f"param/{n}"] = p.detach().clone().contiguous()
        tensors[f"exp_avg/{n}"] = st["exp_avg"].contiguous()
        tensors[f"exp_avg_sq/{n}"] = st["exp_avg_sq"].contiguous()
        moved[n] = float((p.detach().float() != initial[n].float()).float().mean())
    save_file(tensors, str(OUT / "trl_final.safetensors"), metadata={"format": "pt"})
    print("  share of each kept weight that moved:", moved)
    return {
        "format": "bf16_weights_trl/v1",
        "set": "fixtures",
        "generator": "tools/make_bf16_weights_fixtures.py",
        "versions": VERSIONS,
        "policy_model": POLICY,
        "tokenizer_dir": "trl_sync/tokenizer",
        "train_file": "trl_sync/pairs.jsonl",
        "weights_file": "bf16_weights/trl_final.safetensors",
        "model_dtype": "bfloat16",
        "config": CONFIG,
        "log_history": records,
        "kept_tensors": KEPT,
        "moved_share": moved,
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
