"""What the TRL-trainer goldens of fixtures/adamw_8bit/ and fixtures/bf16_weights/ share
(fixtures/README.md sections 13 and 14): TRL 1.16's own `DPOTrainer.train()` on the tiny Llama
of fixtures/models/llama with the pairs and tokenizer of fixtures/trl_sync, six steps on the CPU,
reference = a fresh load of the policy, and the train records it logged.

Imported by tools/make_adamw_8bit_fixtures.py and tools/make_bf16_weights_fixtures.py (run
through their .sh scripts, which make the pinned venv of tools/trl-venv.sh).
"""

import json
import sys
import tempfile

import numpy as np
import safetensors
import torch
import transformers
import trl
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer

POLICY = "models/llama"  # relative to the fixtures folder

# The versions a golden records (`versions`): torch's first, then `extra` (e.g. bitsandbytes).
def versions(**extra):
    return {
        "torch": torch.__version__,
        **extra,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
    }


# The settings both goldens share; each adds `weight_decay`, `bf16` and `optim`.
BASE_CONFIG = {
    "loss_type": ["sigmoid"],
    "beta": 0.1,
    "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 1,
    "max_steps": 6,
    "learning_rate": 1e-3,
    "lr_scheduler_type": "linear",
    "warmup_steps": 0,
    "adam_beta1": 0.9,
    "adam_beta2": 0.999,
    "adam_epsilon": 1e-8,
    "max_grad_norm": 1.0,
    "logging_steps": 1,
    "max_length": 64,
    "truncation_mode": "keep_start",
    "seed": 42,
}

RECORD_KEYS = [
    "step",
    "loss",
    "grad_norm",
    "learning_rate",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
]


def train(fixtures, config, dtype):
    """Runs `DPOTrainer.train()` with `config` (TRL's names) on the policy loaded in `dtype`;
    returns the trainer, the optimizer under accelerate's wrapper, the train records and the
    policy's parameters before training."""
    tokenizer = AutoTokenizer.from_pretrained(fixtures / "trl_sync" / "tokenizer")
    pairs = [
        json.loads(line)
        for line in (fixtures / "trl_sync" / "pairs.jsonl").read_text().splitlines()
    ]
    torch.manual_seed(config["seed"])
    policy = AutoModelForCausalLM.from_pretrained(
        fixtures / POLICY, dtype=dtype, attn_implementation="eager"
    )
    initial = {n: p.detach().clone() for n, p in policy.named_parameters()}
    with tempfile.TemporaryDirectory() as out_dir:
        args = DPOConfig(
            output_dir=out_dir,
            **config,
            fp16=False,
            precompute_ref_log_probs=False,
            eval_strategy="no",
            save_strategy="no",
            use_cpu=True,
            report_to="none",
            gradient_checkpointing=False,
            dataloader_num_workers=0,
        )
        trainer = DPOTrainer(
            model=policy,
            ref_model=None,
            args=args,
            train_dataset=Dataset.from_list(pairs),
            processing_class=tokenizer,
        )
        assert trainer.ref_model.dtype == dtype, trainer.ref_model.dtype
        trainer.train()
    opt = trainer.optimizer
    while hasattr(opt, "optimizer"):  # accelerate's wrapper
        opt = opt.optimizer
    records = [
        {k: h[k] for k in RECORD_KEYS}
        for h in trainer.state.log_history
        if "loss" in h and "train_runtime" not in h
    ]
    assert [r["step"] for r in records] == list(range(1, config["max_steps"] + 1)), records
    for r in records:
        print(f"  step {r['step']}: loss {r['loss']!r} grad_norm {r['grad_norm']!r}")
    return trainer, opt, records, initial
