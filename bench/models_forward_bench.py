"""PyTorch side of the SmolLM2-135M throughput benchmark (see models_forward_bench.sh).

Usage: python models_forward_bench.py DIR forward|backward [iterations]

transformers' LlamaForCausalLM in float32, eager attention, torch.set_num_threads(2), the same
batch (4 x 256, ids (i * 7919 + 13) % vocab, attention mask all ones) and the same work per
step as the Rust bench: forward, or forward + logits.mean().backward().
"""
import statistics
import sys
import time

import torch
from transformers import AutoModelForCausalLM

BATCH, SEQ = 4, 256


def main() -> None:
    directory, mode = sys.argv[1], sys.argv[2]
    iterations = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    torch.set_num_threads(2)
    model = AutoModelForCausalLM.from_pretrained(
        directory, dtype=torch.float32, attn_implementation="eager"
    )
    vocab = model.config.vocab_size
    ids = (torch.arange(BATCH * SEQ, dtype=torch.int64) * 7919 + 13) % vocab
    ids = ids.reshape(BATCH, SEQ)
    mask = torch.ones_like(ids)
    if mode == "forward":
        model.eval()

    def run() -> None:
        if mode == "forward":
            with torch.no_grad():
                model(input_ids=ids, attention_mask=mask).logits.mean().item()
        else:
            model.zero_grad(set_to_none=True)
            model(input_ids=ids, attention_mask=mask).logits.mean().backward()

    run()  # warm-up
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    print(
        f"torch {torch.__version__} {mode}: batch {BATCH}x{SEQ}, median {median:.2f} s over "
        f"{iterations} runs (min {min(times):.2f}, max {max(times):.2f}), "
        f"{BATCH * SEQ / median:.0f} tokens/s"
    )


if __name__ == "__main__":
    main()
