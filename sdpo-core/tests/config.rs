//! The loss configuration: TRL names in and out, and a typed error for every bad value.

use sdpo_core::{CoreError, FDivergenceType, LossConfig, LossType, LossTypes};

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
    assert_eq!((c.f_alpha_divergence_coef, c.discopop_tau), (1.0, 0.05));
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
            f_divergence_type: FDivergenceType::AlphaDivergence,
            f_alpha_divergence_coef: 0.0,
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
