//! Invariants of TRL 1.x's LD-DPO and WPO, alone and combined with SDPO's token selection,
//! checked with proptest on flex (and with fewer cases on every other compiled backend).
//!
//! In words:
//! 1. `ld_alpha = 1` is LD-DPO switched off.
//! 2. `ld_alpha = 0` is the same as cutting the longer completion of each pair down to the
//!    shorter one's length.
//! 3. WPO with `log(sum p^2)` equal to each token's log-prob (every token's aligned log-prob is 0,
//!    so every weight is 1) is WPO switched off.
//! 4. SDPO with `q = 0` keeps every token, so under 1.x it is exactly `sigmoid`, with or without
//!    LD-DPO and WPO.
//! 5. SDPO with LD-DPO and WPO is `sigmoid` with LD-DPO and WPO on the kept tokens: the kept
//!    masks take the place of the completion masks (split point, lengths and weights included).

mod common;

use burn::tensor::{Bool, Device, Tensor, TensorData};
use common::batch::{Batch, batch_strategy};
use common::host1;
use proptest::prelude::*;
use sdpo_core::{
    LossConfig, LossType, LossTypes, PreferenceLoss, TokenLogps, TrlSemantics,
    mask_unimportant_tokens,
};

fn cases_for(name: &str) -> u32 {
    if name == "flex" { 48 } else { 6 }
}

fn config(loss_type: LossType, ld_alpha: Option<f64>, use_weighting: bool, q: f64) -> LossConfig {
    LossConfig {
        trl_semantics: TrlSemantics::V1,
        loss_type: LossTypes::One(loss_type),
        ld_alpha,
        use_weighting,
        sdpo_threshold: q,
        ..LossConfig::default()
    }
}

/// The batch's inputs with WPO terms: `log(sum p^2) = 0.5 * logp - 0.3` (any values <= 0 do),
/// or exactly the log-probs when `neutral`.
fn wpo_inputs(b: &Batch, device: &Device, neutral: bool) -> TokenLogps {
    let mut inputs = b.inputs(device);
    let sq = |t: &Tensor<2>| {
        if neutral {
            t.clone()
        } else {
            t.clone() * 0.5 - 0.3
        }
    };
    inputs.policy_chosen_log_sum_sq_probs = Some(sq(&inputs.policy_chosen_logps));
    inputs.policy_rejected_log_sum_sq_probs = Some(sq(&inputs.policy_rejected_logps));
    inputs
}

fn loss(config: LossConfig, inputs: &TokenLogps) -> Vec<f64> {
    let out = PreferenceLoss::new(config)
        .expect("valid config")
        .forward(inputs, None)
        .expect("forward");
    let mut values = host1(out.loss);
    values.extend(host1(out.losses[0].1.clone()));
    values
}

fn assert_same(a: &[f64], b: &[f64]) -> Result<(), TestCaseError> {
    prop_assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        prop_assert!(x.is_finite() && y.is_finite(), "{x} vs {y}");
        prop_assert!((x - y).abs() <= 1e-6 + 1e-5 * y.abs(), "{x} vs {y}");
    }
    Ok(())
}

/// Keeps the first `n` true entries of each row of the chosen and rejected masks, with `n` the
/// pair's shorter count.
fn truncated_to_shorter(b: &Batch) -> Batch {
    let mut out = b.clone();
    for row in 0..b.batch {
        let range = row * b.seq..(row + 1) * b.seq;
        let count = |m: &Vec<bool>| m[range.clone()].iter().filter(|&&x| x).count();
        let n = count(&b.masks[0]).min(count(&b.masks[1]));
        for side in 0..2 {
            let mut seen = 0;
            for x in &mut out.masks[side][range.clone()] {
                if *x {
                    seen += 1;
                    *x = seen <= n;
                }
            }
        }
    }
    out
}

#[test]
fn ld_alpha_one_is_ld_off_and_zero_cuts_the_longer_tail() {
    for dev in sdpo_testkit::test_devices!() {
        proptest!(ProptestConfig::with_cases(cases_for(dev.name)), |(b in batch_strategy(4, 12, false))| {
            let inputs = b.inputs(&dev.device);
            for t in [LossType::Sigmoid, LossType::SigmoidNorm, LossType::Ipo, LossType::BcoPair] {
                let off = loss(config(t, None, false, 0.0), &inputs);
                assert_same(&loss(config(t, Some(1.0), false, 0.0), &inputs), &off)?;
            }
            // ld_alpha = 0 drops the tail: the same as truncating. (ipo / sigmoid_norm divide by
            // the full length, which truncation would change, so compare length-free losses.)
            let cut = truncated_to_shorter(&b).inputs(&dev.device);
            for t in [LossType::Sigmoid, LossType::Hinge, LossType::ApoZero] {
                assert_same(
                    &loss(config(t, Some(0.0), false, 0.0), &inputs),
                    &loss(config(t, None, false, 0.0), &cut),
                )?;
            }
        });
    }
}

#[test]
fn wpo_with_unit_weights_is_wpo_off() {
    for dev in sdpo_testkit::test_devices!() {
        proptest!(ProptestConfig::with_cases(cases_for(dev.name)), |(b in batch_strategy(4, 12, false), q in 0.0f64..=1.0)| {
            let inputs = wpo_inputs(&b, &dev.device, true);
            for t in [LossType::Sigmoid, LossType::Hinge, LossType::Ipo, LossType::Sdpo] {
                assert_same(
                    &loss(config(t, None, true, q), &inputs),
                    &loss(config(t, None, false, q), &inputs),
                )?;
            }
        });
    }
}

#[test]
fn sdpo_at_q_zero_is_sigmoid_with_ld_and_wpo() {
    for dev in sdpo_testkit::test_devices!() {
        proptest!(ProptestConfig::with_cases(cases_for(dev.name)), |(b in batch_strategy(4, 12, false), ld in prop_oneof![Just(None), (0.0f64..=1.0).prop_map(Some)], wpo in any::<bool>())| {
            let inputs = wpo_inputs(&b, &dev.device, false);
            assert_same(
                &loss(config(LossType::Sdpo, ld, wpo, 0.0), &inputs),
                &loss(config(LossType::Sigmoid, ld, wpo, 0.0), &inputs),
            )?;
        });
    }
}

#[test]
fn sdpo_with_ld_and_wpo_is_sigmoid_on_the_kept_tokens() {
    for dev in sdpo_testkit::test_devices!() {
        proptest!(ProptestConfig::with_cases(cases_for(dev.name)), |(b in batch_strategy(4, 12, false), q in 0.0f64..=1.0, ld in 0.0f64..=1.0, wpo in any::<bool>())| {
            let inputs = wpo_inputs(&b, &dev.device, false);
            let sel = mask_unimportant_tokens(&inputs, q).expect("selection");
            let on_kept = TokenLogps {
                chosen_loss_mask: sel.chosen_kept.clone(),
                rejected_loss_mask: sel.rejected_kept.clone(),
                ..inputs.clone()
            };
            assert_same(
                &loss(config(LossType::Sdpo, Some(ld), wpo, q), &inputs),
                &loss(config(LossType::Sigmoid, Some(ld), wpo, 0.0), &on_kept),
            )?;
            // The rewards come from the same LD-adjusted kept sums.
            let out = PreferenceLoss::new(config(LossType::Sdpo, Some(ld), wpo, q)).unwrap().forward(&inputs, None).unwrap();
            let reference = PreferenceLoss::new(config(LossType::Sigmoid, Some(ld), wpo, 0.0)).unwrap().forward(&on_kept, None).unwrap();
            assert_same(&host1(out.chosen_rewards), &host1(reference.chosen_rewards))?;
            assert_same(&host1(out.rejected_rewards), &host1(reference.rejected_rewards))?;
        });
    }
}

#[test]
fn wpo_needs_the_alignment_terms() {
    let device = Device::flex();
    let ones = || Tensor::<2>::from_data(TensorData::new(vec![-1.0f32; 4], [2, 2]), &device);
    let mask = || Tensor::<2, Bool>::from_data(TensorData::new(vec![true; 4], [2, 2]), &device);
    let inputs = TokenLogps {
        policy_chosen_logps: ones(),
        policy_rejected_logps: ones(),
        ref_chosen_logps: ones(),
        ref_rejected_logps: ones(),
        chosen_loss_mask: mask(),
        rejected_loss_mask: mask(),
        policy_chosen_log_sum_sq_probs: None,
        policy_rejected_log_sum_sq_probs: None,
    };
    let err = PreferenceLoss::new(config(LossType::Sigmoid, None, true, 0.0))
        .unwrap()
        .forward(&inputs, None)
        .unwrap_err();
    assert!(
        err.to_string().contains("use_weighting")
            && err.to_string().contains("policy_chosen_log_sum_sq_probs"),
        "{err}"
    );
}
