#!/usr/bin/env python3
"""Writes fixtures/trl_sync/: TR-DPO (`sync_ref_model`) as TRL 1.16's own DPOTrainer runs it,
for the golden test of the trainer's reference synchronisation
(sdpo-train/tests/sync_ref_model.rs).

Run through tools/make_trl_sync_fixture.sh (it makes or reuses the pinned venv of
tools/trl-venv.sh: torch 2.9.0, transformers 5.24.0, trl 1.16.0).

What it writes (fixtures/README.md section 11 specifies every field):

* `tokenizer/`: a word-level tokenizer over `t0 .. t319` (the vocabulary of
  fixtures/models/llama), saved by transformers' `save_pretrained`;
* `pairs.jsonl`: four standard-format text pairs;
* `sync.json`: the configuration, the token ids TRL's `_prepare_dataset` made of the pairs,
  and for two runs of `DPOTrainer.train()` (`no_sync`, and `sync` with
  `sync_ref_model=True`) the train records of `trainer.state.log_history` and the steps after
  which `SyncRefModelCallback` mixed the reference;
* `sync_final.safetensors`: a subset of the weights after the runs (the policy and the
  reference of the `sync` run, the policy of the `no_sync` run), float32, HF names.

What runs is TRL's and transformers' own code: the text tokenization, the collator, the loss,
AdamW, the schedule, gradient clipping, the training loop and `SyncRefModelCallback`
(`ref.mul_(1 - alpha).add_(policy, alpha=alpha)` for every parameter, in `on_step_end`, when
`global_step % ref_model_sync_steps == 0`, i.e. after the optimizer step and before that
step's record is logged). The reference is what TRL makes when `ref_model` is None and the
policy has no adapter: a fresh load of the policy's checkpoint. float32 on the CPU
(`bf16=False`; TRL's DPOConfig defaults to bf16), eager attention.
"""

import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import safetensors
import tokenizers
import torch
import transformers
import trl
from datasets import Dataset
from safetensors.torch import save_file
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast
from trl import DPOConfig, DPOTrainer
from trl.trainer.callbacks import SyncRefModelCallback

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "fixtures"
OUT = FIXTURES / "trl_sync"
POLICY = "models/llama"  # relative to the fixtures folder

# `t2` (the model config's eos id) cannot be the EOS text: transformers registers special
# tokens as added tokens, which the tokenizer matches as substrings, so `t2` would split `t25`
# into `t2` + `5`. `t319` is no other token's prefix; nor is the pad token `t0`.
EOS = "t319"
PAD = "t0"

PAIRS = [
    {"prompt": "t5 t9 t14", "chosen": " t33 t40 t7", "rejected": " t81 t3"},
    {"prompt": "t17 t250 t62 t8 t91", "chosen": " t120 t44", "rejected": " t205 t11 t66 t150 t29"},
    {"prompt": "t301", "chosen": " t77 t18 t240 t55 t31 t6", "rejected": " t90"},
    {"prompt": "t42 t23 t199 t4", "chosen": " t140 t12", "rejected": " t131 t57 t88"},
]

# Kept in the safetensors file (the whole model three times would be 1.4 MB): the last decoder
# layer, the final norm and the layer-0 norms.
KEPT_PREFIXES = (
    "model.layers.1.",
    "model.norm.",
    "model.layers.0.input_layernorm.",
    "model.layers.0.post_attention_layernorm.",
)

CONFIG = {
    "loss_type": ["sigmoid"],
    "beta": 0.1,
    "label_smoothing": 0.0,
    "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 1,
    "max_steps": 6,
    "learning_rate": 1e-3,
    "lr_scheduler_type": "linear",
    "warmup_steps": 0,
    "weight_decay": 0.0,
    "adam_beta1": 0.9,
    "adam_beta2": 0.999,
    "adam_epsilon": 1e-8,
    "max_grad_norm": 1.0,
    "logging_steps": 1,
    "max_length": 64,
    "truncation_mode": "keep_start",
    "seed": 42,
    "bf16": False,
    "precompute_ref_log_probs": False,
}
SYNC = {"sync_ref_model": True, "ref_model_mixup_alpha": 0.5, "ref_model_sync_steps": 2}

RECORD_KEYS = [
    "step",
    "epoch",
    "loss",
    "grad_norm",
    "learning_rate",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/accuracies",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
]


def write_tokenizer(dir_):
    vocab = {f"t{i}": i for i in range(320)}
    backend = Tokenizer(WordLevel(vocab, unk_token=None))
    backend.pre_tokenizer = WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token=EOS, pad_token=PAD, model_max_length=128
    )
    tok.save_pretrained(dir_)
    return AutoTokenizer.from_pretrained(dir_)


def check_tokenization(tokenizer):
    """prompt + completion tokenizes as the concatenation of the parts' ids (what the pairs are
    for: the completion ids are the completion's words)."""
    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    for p in PAIRS:
        prompt = tokenizer(p["prompt"])["input_ids"]
        for side in ("chosen", "rejected"):
            whole = tokenizer(p["prompt"] + p[side] + EOS)["input_ids"]
            part = tokenizer(p[side])["input_ids"]
            assert whole == prompt + part + [eos_id], (p, side, whole, prompt, part)
            assert [f"t{i}" for i in part] == p[side].split(), (p, side, part)


class SyncRecorder:
    """Records the global steps after which `SyncRefModelCallback` mixed the reference."""

    def __init__(self):
        self.steps = []
        self.calls = 0
        original_mix = SyncRefModelCallback._sync_target_model
        original_step_end = SyncRefModelCallback.on_step_end
        recorder = self

        def mix(model, target_model, alpha):
            recorder.calls += 1
            return original_mix(model, target_model, alpha)

        def on_step_end(cb, args, state, control, **kwargs):
            before = recorder.calls
            out = original_step_end(cb, args, state, control, **kwargs)
            if recorder.calls > before:
                recorder.steps.append(state.global_step)
            return out

        SyncRefModelCallback._sync_target_model = staticmethod(mix)
        SyncRefModelCallback.on_step_end = on_step_end


def run(name, tokenizer, dataset, sync, recorder):
    torch.manual_seed(CONFIG["seed"])
    policy = AutoModelForCausalLM.from_pretrained(
        FIXTURES / POLICY, dtype=torch.float32, attn_implementation="eager"
    )
    recorder.steps = []
    with tempfile.TemporaryDirectory() as out_dir:
        args = DPOConfig(
            output_dir=out_dir,
            loss_type=CONFIG["loss_type"],
            beta=CONFIG["beta"],
            label_smoothing=CONFIG["label_smoothing"],
            per_device_train_batch_size=CONFIG["per_device_train_batch_size"],
            gradient_accumulation_steps=CONFIG["gradient_accumulation_steps"],
            max_steps=CONFIG["max_steps"],
            learning_rate=CONFIG["learning_rate"],
            lr_scheduler_type=CONFIG["lr_scheduler_type"],
            warmup_steps=CONFIG["warmup_steps"],
            weight_decay=CONFIG["weight_decay"],
            adam_beta1=CONFIG["adam_beta1"],
            adam_beta2=CONFIG["adam_beta2"],
            adam_epsilon=CONFIG["adam_epsilon"],
            max_grad_norm=CONFIG["max_grad_norm"],
            logging_steps=CONFIG["logging_steps"],
            max_length=CONFIG["max_length"],
            truncation_mode=CONFIG["truncation_mode"],
            seed=CONFIG["seed"],
            bf16=CONFIG["bf16"],
            fp16=False,
            precompute_ref_log_probs=CONFIG["precompute_ref_log_probs"],
            eval_strategy="no",
            save_strategy="no",
            use_cpu=True,
            report_to="none",
            gradient_checkpointing=False,
            dataloader_num_workers=0,
            **(SYNC if sync else {"sync_ref_model": False}),
        )
        trainer = DPOTrainer(
            model=policy,
            ref_model=None,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
        )
        assert trainer.ref_model is not None and trainer.ref_model is not trainer.model
        prepared = [
            {k: trainer.train_dataset[i][k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")}
            for i in range(len(trainer.train_dataset))
        ]
        trainer.train()
    records = [
        {k: h[k] for k in RECORD_KEYS}
        for h in trainer.state.log_history
        if "loss" in h and "train_runtime" not in h
    ]
    assert [r["step"] for r in records] == list(range(1, CONFIG["max_steps"] + 1)), records
    policy_sd = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    ref_sd = {k: v.detach().clone() for k, v in trainer.ref_model.state_dict().items()}
    print(name, "sync steps", recorder.steps)
    for r in records:
        print(f"  step {r['step']}: loss {r['loss']!r} margins {r['rewards/margins']!r}")
    return {
        "records": records,
        "sync_steps": list(recorder.steps),
        "prepared": prepared,
        "policy": policy_sd,
        "reference": ref_sd,
    }


def kept(state_dict):
    names = sorted(k for k in state_dict if k.startswith(KEPT_PREFIXES))
    assert names, "no tensor kept"
    return names


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    tok_dir = OUT / "tokenizer"
    if tok_dir.exists():
        shutil.rmtree(tok_dir)
    tokenizer = write_tokenizer(tok_dir)
    check_tokenization(tokenizer)
    (OUT / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    dataset = Dataset.from_list(PAIRS)

    recorder = SyncRecorder()
    no_sync = run("no_sync", tokenizer, dataset, False, recorder)
    sync = run("sync", tokenizer, dataset, True, recorder)
    assert no_sync["sync_steps"] == [], no_sync["sync_steps"]
    every = SYNC["ref_model_sync_steps"]
    assert sync["sync_steps"] == list(range(every, CONFIG["max_steps"] + 1, every)), sync["sync_steps"]
    assert no_sync["prepared"] == sync["prepared"]

    # The initial weights, to check that the runs moved them and the mix moved the reference.
    initial = AutoModelForCausalLM.from_pretrained(FIXTURES / POLICY, dtype=torch.float32).state_dict()
    names = kept(initial)
    tensors = {}
    for n in names:
        tensors[f"policy/{n}"] = sync["policy"][n].contiguous()
        tensors[f"reference/{n}"] = sync["reference"][n].contiguous()
        tensors[f"policy_no_sync/{n}"] = no_sync["policy"][n].contiguous()
        assert not torch.equal(sync["reference"][n], initial[n]) or "norm" in n, n
    # The no-sync run's reference never moves.
    for n, v in no_sync["reference"].items():
        assert torch.equal(v, initial[n]), n
    save_file(tensors, str(OUT / "sync_final.safetensors"), metadata={"format": "pt"})
    (OUT / "sync_final.safetensors").chmod(0o644)

    def max_diff(a, b):
        return max((a[k] - b[k]).abs().max().item() for k in names)

    loss_gap = [
        abs(a["loss"] - b["loss"]) for a, b in zip(no_sync["records"], sync["records"])
    ]
    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    fixture = {
        "format": "trl_sync/v1",
        "set": "fixtures",
        "generator": "tools/make_trl_sync_fixture.py",
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "trl": trl.__version__,
            "tokenizers": tokenizers.__version__,
            "safetensors": safetensors.__version__,
            "numpy": np.__version__,
            "python": sys.version.split()[0],
        },
        "policy_model": POLICY,
        "reference": "a fresh load of policy_model (TRL's ref_model=None without PEFT)",
        "tokenizer_dir": "trl_sync/tokenizer",
        "train_file": "trl_sync/pairs.jsonl",
        "weights_file": "trl_sync/sync_final.safetensors",
        "dtype": "float32",
        "eos_token": EOS,
        "eos_token_id": eos_id,
        "pad_token": PAD,
        "pad_token_id": tokenizer.pad_token_id,
        "config": CONFIG,
        "sync_config": SYNC,
        "prepared": no_sync["prepared"],
        "runs": {
            "no_sync": {
                "sync_ref_model": False,
                "log_history": no_sync["records"],
                "sync_steps": no_sync["sync_steps"],
            },
            "sync": {
                **SYNC,
                "log_history": sync["records"],
                "sync_steps": sync["sync_steps"],
            },
        },
        "kept_tensors": names,
        "checks": {
            "loss_abs_diff_sync_vs_no_sync": loss_gap,
            "max_abs_diff_reference_vs_initial": max_diff(sync["reference"], initial),
            "max_abs_diff_reference_vs_policy": max_diff(sync["reference"], sync["policy"]),
            "max_abs_diff_policy_sync_vs_no_sync": max_diff(sync["policy"], no_sync["policy"]),
        },
    }
    (OUT / "sync.json").write_text(json.dumps(fixture, indent=1) + "\n")
    print("checks", json.dumps(fixture["checks"]))
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {OUT} ({total // 1024} KB)")


if __name__ == "__main__":
    main()
