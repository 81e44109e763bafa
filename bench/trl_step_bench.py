"""TRL's side of bench/memory_bench.sh and bench/train_bench.sh: DPOTrainer steps on
SmolLM2-135M-Instruct at a length.

Usage: trl_step_bench.py SMOLLM2_DIR T on|off STEPS [--data FILE.jsonl] [--write-data FILE.jsonl]
                         [--lora] [--prompt-tokens P] [--completion-tokens C]
                         [--precision bf16|fp32]
  --write-data  only write the generated pairs (prompt/chosen/rejected JSONL) and exit, so that
                `sdpo train` can read the very same rows; prints the mean tokens per pair
                (prompt twice, both completions) as "tokens per pair: N"
  --data        train on these pairs instead of generating them
  --lora        PEFT LoRA r 16, alpha 32, dropout 0.05, all-linear (TRL's ModelConfig names)
  --qlora       the same LoRA on a 4-bit base: bitsandbytes NF4, double quantization, float32
                compute (needs bitsandbytes==0.50.2 in the venv)
  --prompt-tokens, --completion-tokens
                lengths of the generated prompt and completions (default T/4 and T; the
                completions are then cut by max_length = T)
  --optim       transformers' optimizer name (default adamw_torch_fused; adamw_8bit needs
                bitsandbytes==0.50.2 in the venv)
  --precision   bf16 (default): TRL's own default, `bf16 = True`, which on the CPU is
                torch.autocast to bfloat16 (matrix products in bf16, f32 master weights);
                fp32: `bf16 = False`, everything in float32

Same shape of work as sdpo-train's `engine_step` example: 2 pairs per step, f32 weights on the CPU,
live reference (a copy of the policy), rows of T tokens (prompt T/4, completion to T after
truncation), TRL's sigmoid DPO loss (TRL has no SDPO), gradient checkpointing on (TRL's default)
or off. Prints the seconds of every optimizer step and the peak RSS (ru_maxrss).

Pinned: torch==2.9.0 transformers==5.24.0 trl==1.16.0 datasets.
"""

import argparse
import json
import random
import resource
import time

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import DPOConfig, DPOTrainer


class StepTimer(TrainerCallback):
    def __init__(self):
        self.started = None

    def on_step_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"step {state.global_step}: {time.perf_counter() - self.started:.1f} s, "
            f"peak RSS so far {rss:.0f} MiB",
            flush=True,
        )


def words(tokenizer, n, rng):
    """Text of about n tokens: ordinary vocabulary entries decoded back to text."""
    ids = [rng.randrange(1000, 40000) for _ in range(n)]
    return tokenizer.decode(ids)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("seq", type=int)
    parser.add_argument("gc", choices=["on", "off"])
    parser.add_argument("steps", type=int)
    parser.add_argument("--data")
    parser.add_argument("--write-data")
    parser.add_argument("--lora", action="store_true")
    parser.add_argument("--qlora", action="store_true")
    parser.add_argument("--optim", default="adamw_torch_fused")
    parser.add_argument("--prompt-tokens", type=int)
    parser.add_argument("--completion-tokens", type=int)
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    # The dtype the policy (and so TRL's reference, a fresh load of it) is loaded in:
    # model_init_kwargs={"dtype": ...}; bfloat16 trains bfloat16 weights and AdamW states.
    parser.add_argument("--model-dtype", choices=["float32", "bfloat16"], default="float32")
    args = parser.parse_args()
    model_dir, seq, gc, steps = args.model_dir, args.seq, args.gc, args.steps
    torch.set_num_threads(2)
    torch.manual_seed(0)
    rng = random.Random(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    rows = []
    if args.data:
        with open(args.data) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    else:
        prompt_tokens = args.prompt_tokens or seq // 4
        completion_tokens = args.completion_tokens or seq
        for _ in range(2 * steps):
            rows.append(
                {
                    "prompt": words(tokenizer, prompt_tokens, rng),
                    "chosen": words(tokenizer, completion_tokens, rng),
                    "rejected": words(tokenizer, completion_tokens, rng),
                }
            )
    if args.write_data:
        with open(args.write_data, "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
        count = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])
        per_pair = sum(
            min(seq, count(r["prompt"]) + count(r["chosen"]))
            + min(seq, count(r["prompt"]) + count(r["rejected"]))
            for r in rows
        ) / len(rows)
        print(f"tokens per pair: {per_pair:.0f}")
        return
    quantization = {}
    if args.qlora:
        from transformers import BitsAndBytesConfig

        quantization = dict(
            quantization_config=BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.float32,
            ),
            device_map="cpu",
        )
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=getattr(torch, args.model_dtype), **quantization
    )
    config = DPOConfig(
        output_dir="/tmp/trl-memory-bench",
        per_device_train_batch_size=2,
        max_length=seq,
        max_steps=steps,
        gradient_checkpointing=gc == "on",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        learning_rate=5e-7,
        dataloader_num_workers=0,
        bf16=args.precision == "bf16",
        optim=args.optim,
    )
    peft_config = None
    if args.lora or args.qlora:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM"
        )
    trainer = DPOTrainer(
        model=model,
        args=config,
        peft_config=peft_config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=[StepTimer()],
    )
    print(
        f"TRL T={seq} gradient_checkpointing={gc} lora={args.lora} qlora={args.qlora} "
        f"bf16={config.bf16} optim={config.optim} model dtype={model.dtype}",
        flush=True,
    )
    trainer.train()
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
