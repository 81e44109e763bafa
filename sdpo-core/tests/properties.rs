//! Invariants of token selection, stated in words and checked with proptest on flex (and on
//! every other compiled backend with fewer cases, since each case is a few device round trips).

mod common;

use burn::tensor::Device;
use common::batch::{Batch, batch_strategy};
use common::{host_mask, host1, host2};
use proptest::prelude::*;
use sdpo_core::{LossConfig, LossType, LossTypes, PreferenceLoss, mask_unimportant_tokens};
use sdpo_testkit::{Tolerance, compare};

fn kept(b: &Batch, q: f64, device: &Device) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let sel = mask_unimportant_tokens(&b.inputs(device), q).expect("selection");
    (host_mask(sel.chosen_kept), host_mask(sel.rejected_kept))
}

fn cases_for(name: &str) -> u32 {
    if name == "flex" { 64 } else { 8 }
}

#[test]
fn q_zero_is_plain_sigmoid_dpo_on_the_unmasked_sums() {
    // With q = 0 every valid token is kept, so SDPO's loss equals sigmoid DPO on the full sums.
    for dev in sdpo_testkit::test_devices!() {
        proptest!(ProptestConfig::with_cases(cases_for(dev.name)), |(b in batch_strategy(4, 12, false))| {
            let inputs = b.inputs(&dev.device);
            let config = |t| LossConfig { loss_type: LossTypes::One(t), sdpo_threshold: 0.0, ..LossConfig::default() };
            let sdpo = PreferenceLoss::new(config(LossType::Sdpo)).unwrap().forward(&inputs, None).unwrap();
            let dpo = PreferenceLoss::new(config(LossType::Sigmoid)).unwrap().forward(&inputs, None).unwrap();
            let (a, e) = (host1(sdpo.losses[0].1.clone()), host1(dpo.losses[0].1.clone()));
            let close = compare(&a, &e, Tolerance::elementwise(1e-6, 1e-6));
            prop_assert!(close.is_ok(), "sdpo vs dpo losses: {}", close.unwrap_err());
        });
    }
}

#[test]
fn kept_is_a_subset_of_valid_and_raising_q_never_adds_a_token() {
    for dev in sdpo_testkit::test_devices!() {
        proptest!(ProptestConfig::with_cases(cases_for(dev.name)), |(b in batch_strategy(4, 16, true), q1 in 0.0f64..=1.0, q2 in 0.0f64..=1.0)| {
            let (lo, hi) = (q1.min(q2), q1.max(q2));
            let (c_lo, r_lo) = kept(&b, lo, &dev.device);
            let (c_hi, r_hi) = kept(&b, hi, &dev.device);
            for (side, (k_lo, k_hi)) in [(c_lo, c_hi), (r_lo, r_hi)].into_iter().enumerate() {
                for (row, (a, h)) in k_lo.iter().zip(&k_hi).enumerate() {
                    for t in 0..b.seq {
                        let valid = b.masks[side][row * b.seq + t];
                        prop_assert!(a[t] == 0.0 || valid, "kept but not valid");
                        prop_assert!(h[t] <= a[t], "q={hi} keeps a token that q={lo} dropped");
                    }
                    // Every row with a valid token keeps at least one.
                    let any_valid = (0..b.seq).any(|t| b.masks[side][row * b.seq + t]);
                    prop_assert_eq!(h.contains(&1.0), any_valid);
                }
            }
        });
    }
}

#[test]
fn tied_scores_are_kept_or_dropped_together() {
    for dev in sdpo_testkit::test_devices!() {
        proptest!(ProptestConfig::with_cases(cases_for(dev.name)), |(b in batch_strategy(3, 16, true), q in 0.0f64..=1.0)| {
            let sel = mask_unimportant_tokens(&b.inputs(&dev.device), q).unwrap();
            for (scores, kept, side) in [(host2(sel.chosen_scores), host_mask(sel.chosen_kept), 0), (host2(sel.rejected_scores), host_mask(sel.rejected_kept), 1)] {
                for row in 0..b.batch {
                    let valid: Vec<usize> = (0..b.seq).filter(|&t| b.masks[side][row * b.seq + t]).collect();
                    for &i in &valid {
                        for &j in &valid {
                            if scores[row][i] == scores[row][j] {
                                prop_assert_eq!(kept[row][i], kept[row][j]);
                            }
                        }
                    }
                }
            }
        });
    }
}

#[test]
fn appending_padding_changes_nothing() {
    for dev in sdpo_testkit::test_devices!() {
        proptest!(ProptestConfig::with_cases(cases_for(dev.name)), |(b in batch_strategy(3, 10, false), extra in 1usize..6, q in 0.0f64..=1.0)| {
            let a = mask_unimportant_tokens(&b.inputs(&dev.device), q).unwrap();
            let p = mask_unimportant_tokens(&b.padded(extra).inputs(&dev.device), q).unwrap();
            prop_assert_eq!(host1(a.chosen_threshold), host1(p.chosen_threshold));
            prop_assert_eq!(host1(a.rejected_threshold), host1(p.rejected_threshold));
            // Thresholds and masks are exact everywhere. Sums are exact on flex (a sequential sum
            // over extra zeros); a GPU reduction tree changes with the row length, so on other
            // backends a sum may move by an ulp (seen on wgpu: 2 ulp at -6.34).
            for (x, y) in [(a.sums.policy_chosen, p.sums.policy_chosen), (a.sums.ref_rejected, p.sums.ref_rejected)] {
                let (x, y) = (host1(x), host1(y));
                if dev.name == "flex" {
                    prop_assert_eq!(x, y);
                } else {
                    let close = compare(&x, &y, Tolerance::elementwise(1e-6, 1e-6));
                    prop_assert!(close.is_ok(), "sums with padding: {}", close.unwrap_err());
                }
            }
            let pk = host_mask(p.chosen_kept);
            for (row, ak) in host_mask(a.chosen_kept).iter().enumerate() {
                prop_assert_eq!(&pk[row][..b.seq], &ak[..]);
                prop_assert!(pk[row][b.seq..].iter().all(|&x| x == 0.0));
            }
        });
    }
}

#[test]
fn permuting_positions_permutes_the_kept_mask() {
    // Selection depends on the multiset of valid scores only, not on where the tokens sit.
    for dev in sdpo_testkit::test_devices!() {
        proptest!(ProptestConfig::with_cases(cases_for(dev.name)), |(b in batch_strategy(3, 12, true), q in 0.0f64..=1.0, seed in any::<u64>())| {
            let mut perm: Vec<usize> = (0..b.seq).collect();
            let mut state = seed | 1;
            for i in (1..perm.len()).rev() {
                state ^= state << 13; state ^= state >> 7; state ^= state << 17;
                perm.swap(i, (state % (i as u64 + 1)) as usize);
            }
            let permute_f = |v: &Vec<f32>| -> Vec<f32> { v.chunks(b.seq).flat_map(|row| perm.iter().map(|&j| row[j]).collect::<Vec<_>>()).collect() };
            let permute_m = |v: &Vec<bool>| -> Vec<bool> { v.chunks(b.seq).flat_map(|row| perm.iter().map(|&j| row[j]).collect::<Vec<_>>()).collect() };
            let pb = Batch { batch: b.batch, seq: b.seq, logps: b.logps.clone().map(|v| permute_f(&v)), masks: b.masks.clone().map(|v| permute_m(&v)) };
            let (c, r) = kept(&b, q, &dev.device);
            let (pc, pr) = kept(&pb, q, &dev.device);
            for (orig, permuted) in [(c, pc), (r, pr)] {
                for row in 0..b.batch {
                    let expected: Vec<f64> = perm.iter().map(|&j| orig[row][j]).collect();
                    prop_assert_eq!(&permuted[row], &expected);
                }
            }
        });
    }
}

#[test]
fn finite_inputs_give_finite_outputs_even_near_minus_1e30() {
    for dev in sdpo_testkit::test_devices!() {
        proptest!(ProptestConfig::with_cases(cases_for(dev.name)), |(b in batch_strategy(3, 10, false), scale in prop_oneof![Just(1.0f32), Just(1e6f32), Just(1e30f32)], q in 0.0f64..=1.0)| {
            let mut big = b.clone();
            for v in big.logps.iter_mut() { for x in v.iter_mut() { *x *= scale; } }
            let out = PreferenceLoss::new(LossConfig { sdpo_threshold: q, ..LossConfig::default() }).unwrap()
                .forward(&big.inputs(&dev.device), None).unwrap();
            for (name, t) in [("loss", out.loss.clone()), ("chosen_rewards", out.chosen_rewards.clone()), ("rejected_rewards", out.rejected_rewards.clone())] {
                for x in host1(t) { prop_assert!(x.is_finite(), "{name} = {x} at scale {scale}"); }
            }
            let sel = out.selection.unwrap();
            for (t, side) in [(sel.chosen_threshold, 0), (sel.rejected_threshold, 1)] {
                for (row, x) in host1(t).into_iter().enumerate() {
                    let any_valid = (0..b.seq).any(|k| b.masks[side][row * b.seq + k]);
                    prop_assert!(x.is_finite() == any_valid, "threshold {x}, row has valid tokens: {any_valid}");
                }
            }
        });
    }
}
