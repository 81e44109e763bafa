#!/usr/bin/env python3
"""Writes fixtures/dpo_metrics_v1.json: the metrics TRL 1.16's DPOTrainer logs, computed by TRL
itself on the batch of fixtures/sdpo_e2e.json (policy fixtures/models/llama, reference
fixtures/models/llama_tied), for the golden tests of sdpo-core's per-token entropy and
top-1 accuracy and of the trainer's metrics.

Run through tools/make_trl_metrics_fixture.sh (it makes or reuses a venv with the pinned
torch 2.9.0, transformers 5.24.0 and trl 1.16.0). What runs is TRL's own code:

* `DPOTrainer.train()` for one optimizer step over the three pairs (one batch of 3, learning
  rate 0 so the weights do not move, `logging_steps = 1`, evaluation on the same three pairs
  after the step): `trainer.state.log_history` holds the train record of step 1 (what
  `_compute_loss` put in `_metrics["train"]` plus transformers' `loss`, `grad_norm`,
  `learning_rate`, `epoch`), the eval record and the end-of-run record (`train_runtime`, ...).
* TRL's fused LM head (`add_fused_lm_head`, which `DPOTrainer.__init__` installs on the policy)
  called on the collated batch: the per-token `entropy`, `mean_logits`, `is_top1` and
  `log_probs` that `_compute_loss` aggregates.

The pairs are given as token ids, so TRL's text tokenization (`_prepare_dataset`) is replaced
by the identity: the dataset already holds what it would produce (`prompt_ids`, `chosen_ids`,
`rejected_ids`). The collator, the loss, the metrics and the training loop are TRL's and
transformers'. float32 throughout (`bf16 = False`; TRL's DPOConfig defaults to bf16), CPU,
eager attention.

The policy's full logits of the collated batch (transformers' forward, `[2B][T][V]`) are
written too, so that sdpo-core can test its pure functions without a model.
"""

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import transformers
import trl
from datasets import Dataset
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast
from trl import DPOConfig, DPOTrainer

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "fixtures"
OUT = FIXTURES / "dpo_metrics_v1.json"


def f32(x):
    """The shortest decimal that round-trips as float32 (README convention)."""
    return float(str(np.float32(x)))


def f32_nested(t):
    return [f32_nested(x) for x in t] if isinstance(t, list) else f32(t)


def tokenizer_for(vocab_size, pad_id):
    """A word-level tokenizer over `t0 .. t{V-1}`: TRL needs a tokenizer for its pad token;
    nothing is tokenized with it."""
    vocab = {f"t{i}": i for i in range(vocab_size)}
    backend = Tokenizer(WordLevel(vocab, unk_token=f"t{pad_id}"))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=f"t{pad_id}",
        eos_token=f"t{pad_id}",
        unk_token=f"t{pad_id}",
    )


def main():
    e2e = json.loads((FIXTURES / "sdpo_e2e.json").read_text())
    torch.manual_seed(0)
    policy_dir = FIXTURES / e2e["policy_model"]
    ref_dir = FIXTURES / e2e["ref_model"]
    policy = AutoModelForCausalLM.from_pretrained(
        policy_dir, dtype=torch.float32, attn_implementation="eager"
    )
    reference = AutoModelForCausalLM.from_pretrained(
        ref_dir, dtype=torch.float32, attn_implementation="eager"
    )
    pad_id = int(e2e["pad_token_id"])
    tokenizer = tokenizer_for(policy.config.vocab_size, pad_id)
    pairs = [
        {"prompt_ids": p, "chosen_ids": c, "rejected_ids": r}
        for p, c, r in zip(e2e["prompts"], e2e["chosen_completions"], e2e["rejected_completions"])
    ]
    n = len(pairs)
    dataset = Dataset.from_list(pairs)

    # The pairs are already tokenized: TRL's text tokenization would have nothing to do.
    DPOTrainer._prepare_dataset = lambda self, dataset, *args, **kwargs: dataset

    beta = float(e2e["beta"])
    with tempfile.TemporaryDirectory() as out_dir:
        args = DPOConfig(
            output_dir=out_dir,
            loss_type=["sigmoid"],
            beta=beta,
            label_smoothing=0.0,
            per_device_train_batch_size=n,
            per_device_eval_batch_size=n,
            max_steps=1,
            learning_rate=0.0,
            weight_decay=0.0,
            logging_steps=1,
            eval_strategy="steps",
            eval_steps=1,
            save_strategy="no",
            max_length=None,
            bf16=False,
            fp16=False,
            use_cpu=True,
            report_to="none",
            gradient_checkpointing=False,
            dataloader_num_workers=0,
            seed=0,
        )
        trainer = DPOTrainer(
            model=policy,
            ref_model=reference,
            args=args,
            train_dataset=dataset,
            eval_dataset=dataset,
            processing_class=tokenizer,
        )
        trainer.train()
        history = trainer.state.log_history

        # The collated batch in fixture order, and TRL's per-token outputs on it.
        batch = trainer.data_collator(pairs)
        model = trainer.model
        model.eval()
        with torch.no_grad():
            labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
            fused = model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                labels=labels,
                fused_lm_head=True,
                use_cache=False,
            )
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
            ).logits
            # Labels that are the most likely token at every other position, so that the top-1
            # test sees hits as well as misses: TRL's `is_top1` for them.
            alt_labels = labels.clone()
            argmax = logits[:, :-1].argmax(dim=-1)
            alt_labels[:, 1::2] = argmax[:, 0::2]
            alt_labels = alt_labels.masked_fill(batch["completion_mask"] == 0, -100)
            alt = model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                labels=alt_labels,
                fused_lm_head=True,
                use_cache=False,
            )

    train_log = next(h for h in history if "loss" in h and "train_runtime" not in h)
    eval_log = next(h for h in history if "eval_loss" in h)
    end_log = next(h for h in history if "train_runtime" in h)

    def rows(t):
        return t.tolist()

    shift_mask = batch["completion_mask"][:, 1:]
    per_token = {
        "entropy": f32_nested(rows(fused.entropy)),
        "mean_logits": f32_nested(rows(fused.mean_logits)),
        "is_top1": [[int(v) for v in r] for r in rows(fused.is_top1.int())],
        "log_probs": f32_nested(rows(fused.log_probs)),
    }
    alt_top1 = {
        "labels": rows(alt_labels),
        "is_top1": [[int(v) for v in r] for r in rows(alt.is_top1.int())],
    }
    fixture = {
        "format": "dpo_metrics_v1/v1",
        "set": e2e.get("set", "fixtures"),
        "generator": "tools/make_trl_metrics_fixture.py",
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "trl": trl.__version__,
            "numpy": np.__version__,
            "python": sys.version.split()[0],
        },
        "batch_from": "sdpo_e2e.json",
        "policy_model": e2e["policy_model"],
        "ref_model": e2e["ref_model"],
        "dtype": "float32",
        "config": {
            "loss_type": ["sigmoid"],
            "beta": beta,
            "label_smoothing": 0.0,
            "per_device_train_batch_size": n,
            "per_device_eval_batch_size": n,
            "gradient_accumulation_steps": 1,
            "max_steps": 1,
            "learning_rate": 0.0,
        },
        "prompt_ids": e2e["prompts"],
        "chosen_ids": e2e["chosen_completions"],
        "rejected_ids": e2e["rejected_completions"],
        "batch": {
            "input_ids": rows(batch["input_ids"]),
            "attention_mask": rows(batch["attention_mask"]),
            "completion_mask": rows(batch["completion_mask"]),
        },
        "loss_mask": rows(shift_mask),
        "logits": f32_nested(rows(logits)),
        "per_token": per_token,
        "argmax_labels": alt_top1,
        "train_log": train_log,
        "eval_log": eval_log,
        "end_log": end_log,
    }
    OUT.write_text(json.dumps(fixture, separators=(",", ":")) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KB)")
    for name, log in [("train", train_log), ("eval", eval_log), ("end", end_log)]:
        print(name, json.dumps(log, indent=None))


if __name__ == "__main__":
    main()
