//! One SDPO training step on a real checkpoint at a given sequence length, through the plain
//! path (autodiff through `CausalLm::forward`) or the memory-bounded engine
//! (`sdpo_train::logps`), for `bench/memory_bench.sh`.
//!
//! A step is what the trainer does per optimizer step with 2 pairs per step and a live
//! reference: the reference's log-probs (untracked), the policy's log-probs, the SDPO loss
//! (q = 0.6, beta 0.1), its gradients, global-norm clipping at 1.0 and an AdamW update.
//! The batch is synthetic: `pairs` chosen and `pairs` rejected rows of `T` tokens (ids from a
//! fixed pseudo-random stream), prompts of `T / 4` tokens, completions to the end; the last
//! rejected row is padded to `3T / 4` tokens.
//!
//! ```text
//! cargo run --release -p sdpo-train --features flex,sdpo-models/rayon,sdpo-models/simd \
//!     --example engine_step -- MODEL_DIR T memory|plain [steps] [budget_mib]
//! ```
//!
//! Prints one line per step (seconds, loss) and the peak resident memory (`VmHWM`).

use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Device, Int, Tensor, TensorData};
use sdpo_core::{LossConfig, PreferenceLoss, TokenLogps};
use sdpo_models::CausalLm;
use sdpo_train::clip::{clip_grad_norm, global_grad_norm};
use sdpo_train::logps::{
    DeviceBatch, MemoryBudget, RowLayout, SidedLogps, chunked_logps, model_logps, policy_step,
};

fn batch(pairs: usize, seq: usize, vocab: usize, device: &Device) -> DeviceBatch {
    let rows = 2 * pairs;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut ids, mut attention, mut completion) = (
        vec![0i64; rows * seq],
        vec![0i64; rows * seq],
        vec![0i64; rows * seq],
    );
    for r in 0..rows {
        let len = if r == rows - 1 { seq * 3 / 4 } else { seq };
        for t in 0..seq {
            let i = r * seq + t;
            ids[i] = (next() % vocab as u64) as i64;
            if t < len {
                attention[i] = 1;
                completion[i] = i64::from(t >= seq / 4);
            }
        }
    }
    let upload = |v: Vec<i64>| Tensor::<2, Int>::from_data(TensorData::new(v, [rows, seq]), device);
    DeviceBatch {
        batch_size: pairs,
        seq_len: seq,
        input_ids: upload(ids),
        attention_mask: upload(attention),
        completion_mask: upload(completion),
        host: None,
    }
}

fn loss(policy: SidedLogps, reference: &SidedLogps) -> Tensor<1> {
    let inputs = TokenLogps {
        policy_chosen_logps: policy.chosen,
        policy_rejected_logps: policy.rejected,
        ref_chosen_logps: reference.chosen.clone(),
        ref_rejected_logps: reference.rejected.clone(),
        chosen_loss_mask: policy.chosen_mask,
        rejected_loss_mask: policy.rejected_mask,
        policy_chosen_log_sum_sq_probs: None,
        policy_rejected_log_sum_sq_probs: None,
    };
    PreferenceLoss::new(LossConfig::default())
        .expect("config")
        .forward(&inputs, None)
        .expect("loss")
        .loss
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: engine_step MODEL_DIR T memory|plain [steps] [budget_mib] [pairs]");
        std::process::exit(2);
    }
    let dir = &args[1];
    let seq: usize = args[2].parse().expect("T");
    let memory = match args[3].as_str() {
        "memory" => true,
        "plain" => false,
        other => panic!("mode `{other}`: memory or plain"),
    };
    let steps: usize = args.get(4).map_or(1, |s| s.parse().expect("steps"));
    let budget = args.get(5).map_or(MemoryBudget::default(), |s| {
        MemoryBudget::new(s.parse::<u64>().expect("budget MiB") << 20)
    });
    let pairs: usize = args.get(6).map_or(2, |s| s.parse().expect("pairs"));

    let device = Device::default();
    let train = device.clone().autodiff();
    let reference = CausalLm::from_pretrained(dir, &device).expect("load reference");
    let mut policy = reference.clone().fork(&train).train();
    let vocab = reference.config().vocab_size;
    let mut optimizer = AdamWConfig::new().init();
    let batch = batch(pairs, seq, vocab, &device);
    println!(
        "{} T={seq} pairs={pairs} budget={} MiB, start RSS {:.0} MiB",
        if memory { "memory" } else { "plain" },
        budget.bytes >> 20,
        peak_rss_mib()
    );
    for step in 0..steps {
        let started = Instant::now();
        let (loss_value, grads) = if memory {
            let ref_logps = chunked_logps(&reference, &batch, &budget).expect("reference");
            let (value, grads) =
                policy_step(&policy, &batch, &budget, RowLayout::TwoRows, None, |l| {
                    let loss = loss(l.logps, &ref_logps);
                    let value = loss.clone().without_autodiff();
                    Ok((loss, value))
                })
                .expect("step");
            (value, grads)
        } else {
            let ref_logps = model_logps(&reference, &batch).expect("reference");
            let logps = model_logps(&policy, &batch).expect("policy");
            let loss = loss(logps, &ref_logps);
            let value = loss.clone().without_autodiff();
            (value, GradientsParams::from_grads(loss.backward(), &policy))
        };
        let mut grads = grads;
        let norm = global_grad_norm(&policy, &grads)
            .map_or(0.0, |n| n.without_autodiff().into_scalar::<f64>());
        clip_grad_norm(&policy, &mut grads, norm, 1.0);
        policy = optimizer.step(5e-7, policy, grads);
        let loss_value = loss_value.into_scalar::<f64>();
        println!(
            "step {step}: {:.1} s, loss {loss_value:.6}, grad_norm {norm:.4}, peak RSS so far {:.0} MiB",
            started.elapsed().as_secs_f64(),
            peak_rss_mib()
        );
    }
    println!("peak RSS {:.0} MiB", peak_rss_mib());
}
