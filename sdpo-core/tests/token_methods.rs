//! The token-scorer interface beyond the goldens: SDPO as a scorer gives the selection's own
//! sums bit for bit; weights are 0 off the completion and constants for the gradient; a
//! method's refusals name the column, key or pair at fault.

mod common;

use burn::tensor::{Device, Tensor};
use common::batch::batch_strategy;
use proptest::prelude::*;
use sdpo_core::token_methods::confpo::{Confpo, ConfpoConfig};
use sdpo_core::token_methods::critical_token::{
    self, CriticalToken, CriticalTokenConfig, CtReduction,
};
use sdpo_core::token_methods::sdpo::SdpoScorer;
use sdpo_core::token_methods::sepo::{self, Sepo, SepoConfig};
use sdpo_core::token_methods::tgdpo::{self, Tgdpo, TgdpoConfig};
use sdpo_core::token_methods::tisdpo::{self, Tisdpo, TisdpoConfig, TisdpoTransform, python_round};
use sdpo_core::{
    CoreError, SidePair, TokenColumns, TokenLogps, TokenScorer, mask_unimportant_tokens,
};

fn exact(a: Tensor<1>, b: Tensor<1>) -> bool {
    let a = a.try_into_vec_as::<f32>().expect("read");
    let b = b.try_into_vec_as::<f32>().expect("read");
    a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()) && a.len() == b.len()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// SDPO as one scorer among the others changes no bit of its sums.
    #[test]
    fn sdpo_as_a_scorer_gives_the_selection_sums_bit_for_bit(
        batch in batch_strategy(4, 12, true),
        q in prop::sample::select(vec![0.0, 0.3, 0.6, 0.9, 1.0]),
    ) {
        let device = Device::flex();
        let inputs = batch.inputs(&device);
        let selection = mask_unimportant_tokens(&inputs, q).expect("selection");
        let weights = SdpoScorer { threshold: q }
            .score(&inputs, &TokenColumns::new())
            .expect("score");
        let sums = weights.weighted_sums(&inputs);
        prop_assert!(exact(sums.policy_chosen, selection.sums.policy_chosen));
        prop_assert!(exact(sums.policy_rejected, selection.sums.policy_rejected));
        prop_assert!(exact(sums.ref_chosen, selection.sums.ref_chosen));
        prop_assert!(exact(sums.ref_rejected, selection.sums.ref_rejected));
    }

    /// Every method's weights are 0 off the completion, finite on it, and the loss finite,
    /// with garbage (1e30) under the masks.
    #[test]
    fn weights_vanish_off_the_completion_and_losses_are_finite(
        batch in batch_strategy(3, 10, false).prop_filter("long completions", |b| {
            // SePO needs one selected token per side: at least 5 completion tokens at 0.3.
            (0..b.batch).all(|r| {
                (0..2).all(|s| b.masks[s][r * b.seq..(r + 1) * b.seq].iter().filter(|&&m| m).count() >= 5)
            })
        }),
    ) {
        let device = Device::flex();
        let inputs = garbage_under_masks(batch.inputs(&device));
        let columns = all_columns(&inputs);
        for method in methods() {
            let out = method.forward(&inputs, &columns).expect("forward");
            let loss = out.loss.clone().try_into_vec_as::<f32>().expect("read")[0];
            prop_assert!(loss.is_finite(), "{}: loss {loss}", method.scorer().name());
            for (weights, mask) in [
                (&out.weights.chosen, &inputs.chosen_loss_mask),
                (&out.weights.rejected, &inputs.rejected_loss_mask),
            ] {
                let off = weights.clone().mask_fill(mask.clone(), 0.0).abs().sum();
                prop_assert_eq!(off.try_into_vec_as::<f32>().expect("read")[0], 0.0);
                let on = weights.clone().try_into_vec_as::<f32>().expect("read");
                prop_assert!(on.iter().all(|w| w.is_finite()));
            }
        }
    }
}

fn garbage_under_masks(inputs: TokenLogps) -> TokenLogps {
    let off_c = inputs.chosen_loss_mask.clone().bool_not();
    let off_r = inputs.rejected_loss_mask.clone().bool_not();
    TokenLogps {
        policy_chosen_logps: inputs
            .policy_chosen_logps
            .clone()
            .mask_fill(off_c.clone(), 1e30),
        policy_rejected_logps: inputs
            .policy_rejected_logps
            .clone()
            .mask_fill(off_r.clone(), -1e30),
        ref_chosen_logps: inputs.ref_chosen_logps.clone().mask_fill(off_c, 1e30),
        ref_rejected_logps: inputs.ref_rejected_logps.clone().mask_fill(off_r, -1e30),
        ..inputs
    }
}

/// Every method's column, made from the batch's own log-probs (shifted, so they differ).
fn all_columns(inputs: &TokenLogps) -> TokenColumns {
    let shifted = |by: f64| SidePair {
        chosen: inputs.ref_chosen_logps.clone() + by,
        rejected: inputs.ref_rejected_logps.clone() - by,
    };
    let probs = SidePair {
        chosen: inputs.policy_chosen_logps.clone().exp().clamp(0.0, 1.0),
        rejected: inputs.policy_rejected_logps.clone().exp().clamp(0.0, 1.0),
    };
    TokenColumns::new()
        .with(sepo::ORACLE_COLUMN, shifted(0.25))
        .with(sepo::ORACLE_REF_COLUMN, shifted(-0.5))
        .with(tisdpo::POSITIVE_COLUMN, shifted(0.125))
        .with(tisdpo::NEGATIVE_COLUMN, shifted(-0.375))
        .with(critical_token::CE_PROB_COLUMN, probs)
        .with(tgdpo::REWARD_COLUMN, shifted(1.0))
}

fn methods() -> Vec<sdpo_core::TokenMethod> {
    use sdpo_core::TokenMethod as M;
    vec![
        M::Confpo(Confpo::new(ConfpoConfig::default()).expect("confpo")),
        M::Sepo(Sepo::new(SepoConfig::default()).expect("sepo")),
        M::Tisdpo(Tisdpo::new(TisdpoConfig::default()).expect("tisdpo")),
        M::CriticalToken(CriticalToken::new(CriticalTokenConfig::default()).expect("ct")),
        M::CriticalToken(
            CriticalToken::new(CriticalTokenConfig {
                reduction: CtReduction::Sequence,
                ..CriticalTokenConfig::default()
            })
            .expect("ct"),
        ),
        M::Tgdpo(Tgdpo::new(TgdpoConfig::default()).expect("tgdpo")),
    ]
}

fn small_batch(device: &Device) -> TokenLogps {
    let t = |rows: [[f32; 4]; 2]| Tensor::<2>::from_floats(rows, device);
    let m = |rows: [[bool; 4]; 2]| {
        Tensor::<2, burn::tensor::Bool>::from_bool(burn::tensor::TensorData::from(rows), device)
    };
    TokenLogps {
        policy_chosen_logps: t([[-1.0, -2.0, -0.5, -1.5], [-0.2, -3.0, -1.0, -0.7]]),
        policy_rejected_logps: t([[-1.2, -0.4, -2.5, -0.9], [-1.1, -0.3, -0.8, -2.0]]),
        ref_chosen_logps: t([[-1.1, -1.8, -0.6, -1.2], [-0.4, -2.0, -1.3, -0.5]]),
        ref_rejected_logps: t([[-1.0, -0.9, -2.0, -1.1], [-0.9, -0.6, -1.0, -1.5]]),
        chosen_loss_mask: m([[true, true, true, false], [false, true, true, true]]),
        rejected_loss_mask: m([[true, true, true, true], [false, false, true, true]]),
        policy_chosen_log_sum_sq_probs: None,
        policy_rejected_log_sum_sq_probs: None,
    }
}

#[test]
fn a_missing_column_names_the_method_and_the_column() {
    let device = Device::flex();
    let inputs = small_batch(&device);
    let err = Tgdpo::new(TgdpoConfig::default())
        .expect("tgdpo")
        .forward(&inputs, &TokenColumns::new())
        .expect_err("no reward column");
    assert_eq!(
        err,
        CoreError::MissingInput {
            loss_type: "tgdpo",
            input: tgdpo::REWARD_COLUMN
        }
    );
    let err = Tisdpo::new(TisdpoConfig::default())
        .expect("tisdpo")
        .forward(&inputs, &TokenColumns::new())
        .expect_err("no raw weights");
    assert!(err.to_string().contains("tisdpo_raw_weight"), "{err}");
}

#[test]
fn a_column_of_another_shape_is_refused_by_name() {
    let device = Device::flex();
    let inputs = small_batch(&device);
    let wrong = Tensor::<2>::zeros([2, 3], &device);
    let columns = TokenColumns::new().with(
        critical_token::CE_PROB_COLUMN,
        SidePair {
            chosen: wrong.clone(),
            rejected: wrong,
        },
    );
    let err = CriticalToken::new(CriticalTokenConfig::default())
        .expect("ct")
        .forward(&inputs, &columns)
        .expect_err("shape");
    assert!(
        matches!(
            err,
            CoreError::ShapeMismatch {
                tensor: critical_token::CE_PROB_COLUMN,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn sepo_refuses_a_completion_too_short_for_one_selected_token_naming_the_pair() {
    let device = Device::flex();
    let inputs = small_batch(&device);
    let columns = all_columns(&inputs);
    // Pair 0's chosen completion has 3 tokens: 2 candidates, 0.3 of them selects none.
    let err = Sepo::new(SepoConfig::default())
        .expect("sepo")
        .forward(&inputs, &columns)
        .expect_err("too short");
    let message = err.to_string();
    assert!(message.contains("pair 0, chosen completion"), "{message}");
    assert!(message.contains("sepo_ratio"), "{message}");
}

#[test]
fn critical_token_refuses_a_probability_outside_zero_one_and_a_grid_too_small() {
    let device = Device::flex();
    let inputs = small_batch(&device);
    let probs = inputs.policy_chosen_logps.clone().exp();
    let columns = TokenColumns::new().with(
        critical_token::CE_PROB_COLUMN,
        SidePair {
            chosen: probs.clone(),
            rejected: probs.clone() + 1.0,
        },
    );
    let method = CriticalToken::new(CriticalTokenConfig::default()).expect("ct");
    let err = method.forward(&inputs, &columns).expect_err("p > 1");
    assert!(
        err.to_string().contains("pair 0, rejected completion"),
        "{err}"
    );

    let columns = TokenColumns::new().with(
        critical_token::CE_PROB_COLUMN,
        SidePair {
            chosen: probs.clone(),
            rejected: probs,
        },
    );
    let small_grid = CriticalToken::new(CriticalTokenConfig {
        reduction: CtReduction::Position {
            denominator: Some(2.0),
        },
        ..CriticalTokenConfig::default()
    })
    .expect("ct");
    let err = small_grid.forward(&inputs, &columns).expect_err("grid");
    assert!(err.to_string().contains("ct_position_denominator"), "{err}");
}

#[test]
fn hyperparameters_out_of_range_are_refused_by_key() {
    let checks: Vec<(CoreError, &str)> = vec![
        (
            Confpo::new(ConfpoConfig {
                beta: 0.0,
                ..ConfpoConfig::default()
            })
            .expect_err("beta"),
            "beta",
        ),
        (
            Confpo::new(ConfpoConfig {
                label_smoothing: 0.5,
                ..ConfpoConfig::default()
            })
            .expect_err("smoothing"),
            "label_smoothing",
        ),
        (
            Sepo::new(SepoConfig {
                sepo_ratio: 1.5,
                ..SepoConfig::default()
            })
            .expect_err("ratio"),
            "sepo_ratio",
        ),
        (
            Sepo::new(SepoConfig {
                sepo_rejected_ratio: Some(0.0),
                ..SepoConfig::default()
            })
            .expect_err("ratio"),
            "sepo_rejected_ratio",
        ),
        (
            Tisdpo::new(TisdpoConfig {
                transform: TisdpoTransform::ThresholdAndScale {
                    min_val: 1.0,
                    max_val: 1.0,
                    min_scale: 0.7,
                    max_scale: 1.3,
                },
                ..TisdpoConfig::default()
            })
            .expect_err("empty range"),
            "tisdpo_max_val",
        ),
        (
            Tisdpo::new(TisdpoConfig {
                transform: TisdpoTransform::Binary { top_percent: 150.0 },
                ..TisdpoConfig::default()
            })
            .expect_err("percent"),
            "tisdpo_top_percent",
        ),
        (
            Tgdpo::new(TgdpoConfig {
                alpha: f64::NAN,
                ..TgdpoConfig::default()
            })
            .expect_err("alpha"),
            "tgdpo_alpha",
        ),
    ];
    for (err, key) in checks {
        assert!(
            matches!(&err, CoreError::InvalidConfig { field, .. } if *field == key),
            "{key}: {err}"
        );
    }
}

#[test]
fn python_round_rounds_the_binary_value_half_to_even() {
    // Python: round(0.125, 2) = 0.12, round(0.375, 2) = 0.38, round(2.675, 2) = 2.67 (2.675 is
    // 2.67499999... in binary), round(-0.125, 2) = -0.12.
    for (x, expected) in [
        (0.125, 0.12),
        (0.375, 0.38),
        (2.675, 2.67),
        (-0.125, -0.12),
        (1.005, 1.0),
    ] {
        assert_eq!(python_round(x, 2), expected, "round({x}, 2)");
    }
}

#[test]
fn reference_free_methods_say_so_and_list_their_columns() {
    let confpo = Confpo::new(ConfpoConfig::default()).expect("confpo");
    let sepo = Sepo::new(SepoConfig::default()).expect("sepo");
    assert!(!confpo.uses_reference() && !sepo.uses_reference());
    assert!(confpo.columns().is_empty());
    assert_eq!(
        sepo.columns(),
        vec![sepo::ORACLE_COLUMN, sepo::ORACLE_REF_COLUMN]
    );
    let tgdpo = Tgdpo::new(TgdpoConfig::default()).expect("tgdpo");
    assert!(tgdpo.uses_reference());
    assert_eq!(tgdpo.columns(), vec![tgdpo::REWARD_COLUMN]);
}
