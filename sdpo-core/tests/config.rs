//! The loss configuration: TRL names in and out, and a typed error for every bad value.

use sdpo_core::{CoreError, FDivergenceType, LossConfig, LossType, LossTypes, TrlSemantics};

fn field_of(config: LossConfig) -> &'static str {
    match config.validate() {
        Err(CoreError::InvalidConfig { field, .. }) => field,
        other => panic!("expected an invalid-config error, got {other:?}"),
    }
}

#[test]
fn defaults_are_trl_defaults_with_sdpo() {
    let c = LossConfig::default();
    assert_eq!(c.loss_types(), &[LossType::Sdpo]);
    assert_eq!(
        (c.beta, c.label_smoothing, c.sdpo_threshold),
        (0.1, 0.0, 0.6)
    );
    assert_eq!(c.f_divergence_type, FDivergenceType::ReverseKl);
    assert_eq!(c.trl_semantics, TrlSemantics::V1);
    assert_eq!((c.f_alpha_divergence_coef, c.discopop_tau), (None, 0.05));
    assert_eq!((c.ld_alpha, c.use_weighting), (None, false));
    // TRL 1.x's default alpha is 0.5; TRL 0.28's was 1.0.
    assert_eq!(c.alpha_coef(), 0.5);
    let old = LossConfig {
        trl_semantics: TrlSemantics::V0_28,
        ..LossConfig::default()
    };
    assert_eq!(old.alpha_coef(), 1.0);
    c.validate().expect("defaults are valid");
}

#[test]
fn deserialises_trl_names_one_or_many_loss_types() {
    let one: LossConfig =
        serde_json::from_str(r#"{"loss_type": "aot_pair", "beta": 0.5}"#).unwrap();
    assert_eq!(one.loss_types(), &[LossType::AotUnpaired]);
    assert_eq!(one.beta, 0.5);
    let many: LossConfig = serde_json::from_str(
        r#"{"loss_type": ["sdpo", "sft"], "loss_weights": [1.0, 0.2], "f_divergence_type": "js_divergence"}"#,
    )
    .unwrap();
    assert_eq!(
        many.loss_type,
        LossTypes::Many(vec![LossType::Sdpo, LossType::Sft])
    );
    assert_eq!(many.weights(), vec![1.0, 0.2]);
    assert_eq!(many.f_divergence_type, FDivergenceType::JsDivergence);
    many.validate().unwrap();
    for t in LossType::ALL {
        assert_eq!(t.name().parse::<LossType>().unwrap(), t);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, format!("\"{}\"", t.name()));
    }
}

#[test]
fn unknown_names_are_errors() {
    let err = serde_json::from_str::<LossConfig>(r#"{"loss_typ": "sigmoid"}"#).unwrap_err();
    assert!(err.to_string().contains("loss_typ"), "{err}");
    let err = serde_json::from_str::<LossConfig>(r#"{"loss_type": "sigmoidd"}"#).unwrap_err();
    assert!(
        err.to_string().contains("sigmoidd") && err.to_string().contains("apo_zero"),
        "{err}"
    );
    let err = serde_json::from_str::<LossConfig>(r#"{"loss_type": ["sdpo", "nope"]}"#).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
    let err = "sigmoidd".parse::<LossType>().unwrap_err();
    assert!(
        err.to_string().contains("sigmoidd") && err.to_string().contains("sdpo"),
        "{err}"
    );
}

#[test]
fn every_bad_value_names_its_field() {
    let base = LossConfig::default;
    assert_eq!(
        field_of(LossConfig {
            sdpo_threshold: 1.5,
            ..base()
        }),
        "sdpo_threshold"
    );
    assert_eq!(
        field_of(LossConfig {
            sdpo_threshold: -0.1,
            ..base()
        }),
        "sdpo_threshold"
    );
    assert_eq!(
        field_of(LossConfig {
            sdpo_threshold: f64::NAN,
            ..base()
        }),
        "sdpo_threshold"
    );
    assert_eq!(
        field_of(LossConfig {
            beta: 0.0,
            ..base()
        }),
        "beta"
    );
    assert_eq!(
        field_of(LossConfig {
            beta: -1.0,
            ..base()
        }),
        "beta"
    );
    assert_eq!(
        field_of(LossConfig {
            beta: f64::NAN,
            ..base()
        }),
        "beta"
    );
    assert_eq!(
        field_of(LossConfig {
            beta: f64::INFINITY,
            ..base()
        }),
        "beta"
    );
    assert_eq!(
        field_of(LossConfig {
            label_smoothing: f64::NAN,
            ..base()
        }),
        "label_smoothing"
    );
    assert_eq!(
        field_of(LossConfig {
            label_smoothing: 0.7,
            ..base()
        }),
        "label_smoothing"
    );
    assert_eq!(
        field_of(LossConfig {
            loss_type: LossTypes::One(LossType::Robust),
            label_smoothing: 0.5,
            ..base()
        }),
        "label_smoothing"
    );
    // 0.5 is allowed for the other loss types.
    LossConfig {
        label_smoothing: 0.5,
        ..base()
    }
    .validate()
    .unwrap();
    assert_eq!(
        field_of(LossConfig {
            trl_semantics: TrlSemantics::V0_28,
            f_divergence_type: FDivergenceType::AlphaDivergence,
            f_alpha_divergence_coef: Some(0.0),
            ..base()
        }),
        "f_alpha_divergence_coef"
    );
    assert_eq!(
        field_of(LossConfig {
            f_alpha_divergence_coef: Some(f64::NAN),
            ..base()
        }),
        "f_alpha_divergence_coef"
    );
    assert_eq!(
        field_of(LossConfig {
            discopop_tau: 0.0,
            ..base()
        }),
        "discopop_tau"
    );
    assert_eq!(
        field_of(LossConfig {
            loss_type: LossTypes::Many(vec![]),
            ..base()
        }),
        "loss_type"
    );
    assert_eq!(
        field_of(LossConfig {
            loss_weights: Some(vec![1.0, 2.0]),
            ..base()
        }),
        "loss_weights"
    );
    assert_eq!(
        field_of(LossConfig {
            loss_weights: Some(vec![f64::NAN]),
            ..base()
        }),
        "loss_weights"
    );
    let msg = LossConfig {
        beta: -1.0,
        ..base()
    }
    .validate()
    .unwrap_err()
    .to_string();
    assert!(msg.contains("beta") && msg.contains("-1"), "{msg}");
}

#[test]
fn new_trl_1x_keys_deserialise_with_trl_names() {
    let c: LossConfig = serde_json::from_str(
        r#"{"trl_semantics": "1.x", "loss_type": "sigmoid_norm", "ld_alpha": 0.5,
            "use_weighting": true, "f_divergence_type": "forward_kl",
            "f_alpha_divergence_coef": 0.3}"#,
    )
    .unwrap();
    assert_eq!(c.trl_semantics, TrlSemantics::V1);
    assert_eq!(c.loss_types(), &[LossType::SigmoidNorm]);
    assert_eq!((c.ld_alpha, c.use_weighting), (Some(0.5), true));
    assert_eq!(c.f_divergence_type, FDivergenceType::ForwardKl);
    assert_eq!(c.alpha_coef(), 0.3);
    c.validate().unwrap();
    let old: LossConfig = serde_json::from_str(r#"{"trl_semantics": "0.28"}"#).unwrap();
    assert_eq!(old.trl_semantics, TrlSemantics::V0_28);
    // Round trip; unset options stay unset.
    let json = serde_json::to_string(&LossConfig::default()).unwrap();
    assert!(json.contains(r#""trl_semantics":"1.x""#), "{json}");
    assert!(
        !json.contains("ld_alpha") && !json.contains("f_alpha_divergence_coef"),
        "{json}"
    );
    let back: LossConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back, LossConfig::default());
    let err = serde_json::from_str::<LossConfig>(r#"{"trl_semantics": "1.16"}"#).unwrap_err();
    assert!(err.to_string().contains("1.16"), "{err}");
}

#[test]
fn trl_1x_refuses_what_trl_1x_refuses_and_more() {
    let v1 = |loss_type: LossType| LossConfig {
        loss_type: LossTypes::One(loss_type),
        ..LossConfig::default()
    };
    // An f-divergence with a loss it has no form for.
    for t in [
        LossType::NcaPair,
        LossType::BcoPair,
        LossType::SppoHard,
        LossType::Aot,
        LossType::AotUnpaired,
        LossType::ApoZero,
        LossType::ApoDown,
    ] {
        let c = LossConfig {
            f_divergence_type: FDivergenceType::ForwardKl,
            ..v1(t)
        };
        assert_eq!(field_of(c), "f_divergence_type", "{t}");
    }
    for t in [
        LossType::Sigmoid,
        LossType::SigmoidNorm,
        LossType::Hinge,
        LossType::Ipo,
        LossType::Robust,
        LossType::Discopop,
        LossType::Sft,
        LossType::Sdpo,
    ] {
        LossConfig {
            f_divergence_type: FDivergenceType::AlphaDivergence,
            ..v1(t)
        }
        .validate()
        .unwrap_or_else(|e| panic!("{t}: {e}"));
    }
    // WPO with the sorting losses.
    for t in [LossType::Aot, LossType::AotUnpaired] {
        let c = LossConfig {
            use_weighting: true,
            ..v1(t)
        };
        assert_eq!(field_of(c), "use_weighting", "{t}");
    }
    // exo_pair needs its epsilon.
    assert_eq!(field_of(v1(LossType::ExoPair)), "label_smoothing");
    LossConfig {
        label_smoothing: 1e-3,
        ..v1(LossType::ExoPair)
    }
    .validate()
    .unwrap();
    // Label smoothing that no configured loss reads (TRL 1.x would silently ignore it).
    let msg = LossConfig {
        label_smoothing: 0.1,
        ..v1(LossType::Sigmoid)
    }
    .validate()
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains("label_smoothing") && msg.contains("0.28"),
        "{msg}"
    );
    LossConfig {
        label_smoothing: 0.1,
        loss_type: LossTypes::Many(vec![LossType::Sigmoid, LossType::Robust]),
        ..LossConfig::default()
    }
    .validate()
    .unwrap();
    // ld_alpha in [0, 1].
    for bad in [-0.1, 1.5, f64::NAN] {
        let c = LossConfig {
            ld_alpha: Some(bad),
            ..LossConfig::default()
        };
        assert_eq!(field_of(c), "ld_alpha", "{bad}");
    }
    // alpha = 1 is reverse KL under 1.x, allowed; 0 is allowed too (no division by it).
    for a in [0.0, 1.0] {
        LossConfig {
            f_divergence_type: FDivergenceType::AlphaDivergence,
            f_alpha_divergence_coef: Some(a),
            ..LossConfig::default()
        }
        .validate()
        .unwrap();
    }
}

#[test]
fn trl_0_28_refuses_the_1x_only_options() {
    let old = LossConfig {
        trl_semantics: TrlSemantics::V0_28,
        ..LossConfig::default()
    };
    old.validate().unwrap();
    let cases = [
        (
            LossConfig {
                loss_type: LossTypes::One(LossType::SigmoidNorm),
                ..old.clone()
            },
            "loss_type",
        ),
        (
            LossConfig {
                f_divergence_type: FDivergenceType::ForwardKl,
                ..old.clone()
            },
            "f_divergence_type",
        ),
        (
            LossConfig {
                ld_alpha: Some(0.5),
                ..old.clone()
            },
            "ld_alpha",
        ),
        (
            LossConfig {
                use_weighting: true,
                ..old.clone()
            },
            "use_weighting",
        ),
    ];
    for (c, field) in cases {
        let msg = c.validate().unwrap_err().to_string();
        assert!(msg.contains(field) && msg.contains("1.x"), "{msg}");
        assert_eq!(field_of(c), field);
    }
    // TRL 0.28 smooths sigmoid (cDPO) and substitutes exo_pair's epsilon: both allowed.
    for t in [LossType::Sigmoid, LossType::ExoPair] {
        LossConfig {
            loss_type: LossTypes::One(t),
            label_smoothing: if t == LossType::Sigmoid { 0.1 } else { 0.0 },
            ..old.clone()
        }
        .validate()
        .unwrap();
    }
}

/// A token-level method parses by its name, stands alone in `loss_type`, and refuses the
/// DPO-family options it would not read, naming the key; its own keys are checked too.
#[test]
fn token_level_methods_stand_alone_and_refuse_what_they_ignore() {
    let parse = |json: &str| serde_json::from_str::<LossConfig>(json).expect(json);
    for t in LossType::TOKEN_METHODS {
        let config = parse(&format!(r#"{{"loss_type": "{t}"}}"#));
        config.validate().unwrap_or_else(|e| panic!("{t}: {e}"));
        assert_eq!(
            config.token_method().expect("built").map(|m| m.loss_type()),
            Some(t)
        );
        let combined = parse(&format!(r#"{{"loss_type": ["{t}", "sft"]}}"#));
        assert_eq!(field_of(combined), "loss_type", "{t} with sft");
        let weighted = parse(&format!(r#"{{"loss_type": "{t}", "use_weighting": true}}"#));
        assert_eq!(field_of(weighted), "use_weighting", "{t}");
        let ld = parse(&format!(r#"{{"loss_type": "{t}", "ld_alpha": 0.5}}"#));
        assert_eq!(field_of(ld), "ld_alpha", "{t}");
    }
    assert!(
        LossConfig::default()
            .token_method()
            .expect("sdpo")
            .is_none()
    );
    let cases = [
        (
            r#"{"loss_type": "sepo", "label_smoothing": 0.1}"#,
            "label_smoothing",
        ),
        (
            r#"{"loss_type": "tisdpo", "reference_free": true}"#,
            "reference_free",
        ),
        (r#"{"loss_type": "sepo", "sepo_ratio": 0.0}"#, "sepo_ratio"),
        (r#"{"loss_type": "tgdpo", "tgdpo_alpha": NaN}"#, ""),
        (
            r#"{"loss_type": "tisdpo", "tisdpo_transform": "threshold_and_scale", "tisdpo_min_val": 2.0}"#,
            "tisdpo_max_val",
        ),
        (
            r#"{"loss_type": "critical_token", "ct_ce_gamma": -1.0}"#,
            "ct_ce_gamma",
        ),
    ];
    for (json, field) in cases {
        if field.is_empty() {
            assert!(serde_json::from_str::<LossConfig>(json).is_err(), "{json}");
            continue;
        }
        assert_eq!(field_of(parse(json)), field, "{json}");
    }
    // ConfPO reads label smoothing; SePO and ConfPO are reference-free anyway.
    parse(r#"{"loss_type": "confpo", "label_smoothing": 0.1, "reference_free": true}"#)
        .validate()
        .expect("confpo with label smoothing");
}
