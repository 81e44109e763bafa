#!/usr/bin/env python3
"""Times the original SDPO fork's token selection on CPU, for comparison with sdpo-core.

The fork (a TRL 0.20-dev fork) selects tokens with a host-side loop over the rows of the batch:
for each sequence it takes the scores of its valid tokens, calls `torch.quantile` on them,
then builds `kept = scores >= threshold` and the four kept-token sums. This script times that
algorithm ("row loop"), and, for reference, a vectorised sort-based torch version of the same
math ("vectorised": the algorithm sdpo-core runs on a burn device).

The inputs are the very numbers `sdpo-core/benches/selection.rs` uses (same SplitMix64 stream,
same shapes): log-probs uniform in (-10, 0) on the completion tokens, 0 elsewhere; each
completion is one contiguous run of 50-100 % of T after a random prompt offset. With log-probs
zeroed outside the completion, the fork's validity rule (policy log-prob != 0) and sdpo-core's
(the loss mask) select the same tokens; the script checks that both torch versions agree.

Usage (torch 2.9.0, CPU, 2 threads unless --threads says otherwise):
    python bench/sdpo_row_loop.py [--samples 30] [--threads 2] [--json out.json]
"""

import argparse
import json
import statistics
import time

import torch

Q = 0.6
SHAPES = [(8, 512), (8, 2048), (32, 512), (32, 2048)]
MASK64 = (1 << 64) - 1


class SplitMix64:
    """The same generator as the Rust bench, so both time identical inputs."""

    def __init__(self, seed):
        self.state = seed & MASK64

    def next_u64(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def unit(self):
        return ((self.next_u64() >> 11) + 0.5) / float(1 << 53)

    def range(self, lo, hi):
        return lo + self.next_u64() % (hi - lo + 1)


def make_inputs(batch, seq):
    rng = SplitMix64(0x5D90 ^ (batch * 100_000 + seq))

    def completion_mask():
        rows = []
        for _ in range(batch):
            length = rng.range(seq // 2, seq)
            offset = rng.range(0, seq - length)
            rows.append([offset <= t < offset + length for t in range(seq)])
        return rows

    def logps(mask):
        flat = [-10.0 * rng.unit() if valid else 0.0 for row in mask for valid in row]
        return torch.tensor(flat, dtype=torch.float32).reshape(batch, seq)

    chosen_mask = completion_mask()
    rejected_mask = completion_mask()
    return {
        "policy_chosen": logps(chosen_mask),
        "policy_rejected": logps(rejected_mask),
        "ref_chosen": logps(chosen_mask),
        "ref_rejected": logps(rejected_mask),
        "chosen_mask": torch.tensor(chosen_mask),
        "rejected_mask": torch.tensor(rejected_mask),
    }


def fork_row_loop(x, q):
    """The fork's algorithm: invalid = policy log-prob == 0, one torch.quantile per row."""

    def side(scores, policy):
        scores = scores.clone()
        scores[policy == 0] = float("-inf")
        thresholds = []
        for row in scores:
            valid = row[row > float("-inf")]
            if valid.numel() > 0:
                thresholds.append(torch.quantile(valid, q))
            else:
                thresholds.append(torch.tensor(float("-inf")))
        thresholds = torch.stack(thresholds)
        return scores >= thresholds.unsqueeze(1), thresholds

    chosen_kept, chosen_thr = side(x["ref_chosen"] - x["policy_chosen"], x["policy_chosen"])
    rejected_kept, rejected_thr = side(
        x["policy_rejected"] - x["ref_rejected"], x["policy_rejected"]
    )
    sums = [
        x["policy_chosen"].masked_fill(~chosen_kept, 0).sum(-1),
        x["policy_rejected"].masked_fill(~rejected_kept, 0).sum(-1),
        x["ref_chosen"].masked_fill(~chosen_kept, 0).sum(-1),
        x["ref_rejected"].masked_fill(~rejected_kept, 0).sum(-1),
    ]
    return chosen_kept, rejected_kept, chosen_thr, rejected_thr, sums


def vectorised(x, q):
    """All rows at once: sort with invalid = +inf, gather the two neighbours, torch.lerp."""

    def side(scores, valid):
        scores = scores.masked_fill(~valid, 0.0)
        ordered = scores.masked_fill(~valid, float("inf")).sort(dim=1).values
        count = valid.sum(dim=1, keepdim=True)
        rank = (count.to(scores.dtype) - 1).clamp_min(0) * torch.tensor(q, dtype=scores.dtype)
        lower = rank.floor()
        v_lower = ordered.gather(1, lower.long())
        v_upper = ordered.gather(1, rank.ceil().long())
        thr = torch.lerp(v_lower, v_upper, rank - lower)
        thr = thr.masked_fill(count == 0, float("-inf"))
        return (scores >= thr) & valid, thr.squeeze(1)

    chosen_kept, chosen_thr = side(x["ref_chosen"] - x["policy_chosen"], x["chosen_mask"])
    rejected_kept, rejected_thr = side(
        x["policy_rejected"] - x["ref_rejected"], x["rejected_mask"]
    )
    sums = [
        (x["policy_chosen"] * chosen_kept).sum(-1),
        (x["policy_rejected"] * rejected_kept).sum(-1),
        (x["ref_chosen"] * chosen_kept).sum(-1),
        (x["ref_rejected"] * rejected_kept).sum(-1),
    ]
    return chosen_kept, rejected_kept, chosen_thr, rejected_thr, sums


def median_seconds(fn, samples):
    """Median wall time of one call; each sample repeats the call to last >= ~5 ms."""
    fn()  # warm-up
    start = time.perf_counter()
    fn()
    once = time.perf_counter() - start
    reps = max(1, int(0.005 / max(once, 1e-9)))
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        times.append((time.perf_counter() - start) / reps)
    return statistics.median(times)


def fmt(seconds):
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.0f} µs"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, q = {Q}, float32")
    print(f"{'shape':<14} {'row loop':>12} {'vectorised':>12}")
    results = []
    with torch.no_grad():
        for batch, seq in SHAPES:
            x = make_inputs(batch, seq)
            loop, vec = fork_row_loop(x, Q), vectorised(x, Q)
            for a, b in zip(loop[:2], vec[:2]):
                assert torch.equal(a, b), "row loop and vectorised disagree on a kept mask"
            for a, b in zip(loop[2:4], vec[2:4]):
                torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
            t_loop = median_seconds(lambda: fork_row_loop(x, Q), args.samples)
            t_vec = median_seconds(lambda: vectorised(x, Q), args.samples)
            label = f"B={batch} T={seq}"
            print(f"{label:<14} {fmt(t_loop):>12} {fmt(t_vec):>12}")
            results.append(
                {"batch": batch, "seq": seq, "row_loop_s": t_loop, "vectorised_s": t_vec}
            )
    if args.json:
        with open(args.json, "w") as f:
            meta = {"torch": torch.__version__, "threads": args.threads}
            json.dump({**meta, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
