//! `config.json` in the transformers 4 and 5 layouts resolves to the same model; RoPE scaling
//! types resolve and behave as their definitions say. Host-only (no tensors).

mod common;

use std::path::Path;

use common::{model_dir, read_config, tiny_models};
use sdpo_models::{
    Architecture, HfConfig, ModelConfig, ModelError, RopeConfig, RopeScaling, inverse_frequencies,
};
use serde_json::{Value, json};

fn resolve(config: &serde_json::Map<String, Value>) -> Result<ModelConfig, ModelError> {
    let text = serde_json::to_string(config).expect("serialise");
    ModelConfig::try_from(HfConfig::from_json_str(&text, Path::new("config.json"))?)
}

/// The fixture config rewritten in the transformers 4 layout: `rope_theta` at the top, the
/// scaling (if any) in `rope_scaling`; Gemma 3's per-layer-type RoPE as `rope_theta` (full
/// layers) and `rope_local_base_freq` (sliding layers).
fn as_v4(mut c: serde_json::Map<String, Value>) -> serde_json::Map<String, Value> {
    if let Some(Value::Object(mut per_type)) = c.remove("rope_parameters") {
        let mut rope = match per_type.remove("full_attention") {
            Some(Value::Object(full)) => {
                let sliding = per_type
                    .remove("sliding_attention")
                    .expect("sliding_attention");
                c.insert("rope_local_base_freq".into(), sliding["rope_theta"].clone());
                full
            }
            _ => per_type,
        };
        let theta = rope.remove("rope_theta").expect("rope_theta");
        c.insert("rope_theta".into(), theta);
        let scaled = rope.get("rope_type").and_then(Value::as_str) != Some("default");
        let scaling = if scaled {
            Value::Object(rope)
        } else {
            Value::Null
        };
        c.insert("rope_scaling".into(), scaling);
    }
    if let Some(dtype) = c.remove("dtype") {
        c.insert("torch_dtype".into(), dtype);
    }
    c
}

fn without_source(mut c: ModelConfig) -> ModelConfig {
    c.hf = HfConfig::default();
    c
}

#[test]
fn transformers_4_and_5_layouts_resolve_identically() {
    for name in &tiny_models() {
        let v5 = read_config(&model_dir(name));
        let a = resolve(&v5).expect("v5");
        let b = resolve(&as_v4(v5)).expect("v4");
        assert_eq!(without_source(a), without_source(b), "{name}");
    }
    let smollm2 = read_config(&sdpo_testkit::fixtures_dir().join("smollm2"));
    let a = resolve(&smollm2).expect("smollm2");
    assert_eq!(a.rope.as_ref().map(|r| r.theta), Some(100_000.0));
    assert_eq!(
        (a.num_attention_heads, a.num_key_value_heads, a.head_dim),
        (9, 3, 64)
    );
    assert_eq!(a.norm_eps, 9.999999747378752e-06);
    assert!(a.tie_word_embeddings);
    assert_eq!(
        without_source(a),
        without_source(resolve(&as_v4(smollm2)).expect("v4"))
    );
}

#[test]
fn fixture_configs_resolve_to_their_documented_shapes() {
    let llama = resolve(&read_config(&model_dir("llama"))).expect("llama");
    assert_eq!(llama.architecture, Architecture::Llama);
    assert_eq!(
        (llama.vocab_size, llama.hidden_size, llama.head_dim),
        (320, 64, 16)
    );
    assert_eq!(
        (llama.num_attention_heads, llama.num_key_value_heads),
        (4, 2)
    );
    assert!(!llama.tie_word_embeddings && !llama.qkv_bias && !llama.o_bias);
    let qwen2 = resolve(&read_config(&model_dir("qwen2"))).expect("qwen2");
    assert_eq!(qwen2.architecture, Architecture::Qwen2);
    assert!(qwen2.qkv_bias && !qwen2.o_bias && !qwen2.mlp_bias);
    let gpt2 = resolve(&read_config(&model_dir("gpt2"))).expect("gpt2");
    assert_eq!(gpt2.architecture, Architecture::Gpt2);
    assert_eq!(
        (gpt2.intermediate_size, gpt2.max_position_embeddings),
        (256, 64)
    );
    assert!(gpt2.tie_word_embeddings && gpt2.rope.is_none());
}

/// A Llama 3.2 style config (transformers 4 layout) and its transformers 5 twin.
#[test]
fn llama3_rope_scaling_resolves_in_both_layouts() {
    let mut v4 = read_config(&model_dir("llama"));
    v4.remove("rope_parameters");
    let scaling = json!({"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192, "rope_type": "llama3"});
    v4.insert("rope_theta".into(), json!(500000.0));
    v4.insert("rope_scaling".into(), scaling.clone());
    let mut v5 = read_config(&model_dir("llama"));
    let mut params = scaling.as_object().expect("object").clone();
    params.insert("rope_theta".into(), json!(500000.0));
    v5.insert("rope_parameters".into(), Value::Object(params));
    let expected = RopeConfig {
        theta: 500000.0,
        scaling: RopeScaling::Llama3 {
            factor: 32.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        },
    };
    assert_eq!(resolve(&v4).expect("v4").rope, Some(expected.clone()));
    assert_eq!(resolve(&v5).expect("v5").rope, Some(expected));

    // Legacy `type` key, linear scaling.
    let mut legacy = read_config(&model_dir("llama"));
    legacy.remove("rope_parameters");
    legacy.insert(
        "rope_scaling".into(),
        json!({"type": "linear", "factor": 2.0}),
    );
    let rope = resolve(&legacy).expect("linear").rope.expect("rope");
    assert_eq!(rope.scaling, RopeScaling::Linear { factor: 2.0 });
    assert_eq!(rope.theta, 10000.0);
}

/// Definitions: linear divides every inverse frequency by the factor; llama3 keeps the high
/// frequencies (wavelength below original_ctx / high_freq_factor), divides the low ones
/// (wavelength above original_ctx / low_freq_factor) by the factor, and lies in between
/// otherwise.
#[test]
fn rope_scaling_follows_its_definition() {
    let head_dim = 128;
    let plain = RopeConfig {
        theta: 500000.0,
        scaling: RopeScaling::None,
    };
    let base = inverse_frequencies(&plain, head_dim);
    assert_eq!(base.len(), head_dim / 2);
    assert_eq!(base[0], 1.0);
    for w in base.windows(2) {
        assert!(w[1] < w[0], "inverse frequencies decrease");
    }
    let linear = inverse_frequencies(
        &RopeConfig {
            scaling: RopeScaling::Linear { factor: 4.0 },
            ..plain
        },
        head_dim,
    );
    for (l, b) in linear.iter().zip(&base) {
        assert_eq!(*l, b / 4.0);
    }
    let (factor, low, high, ctx) = (32.0, 1.0, 4.0, 8192usize);
    let llama3 = inverse_frequencies(
        &RopeConfig {
            scaling: RopeScaling::Llama3 {
                factor,
                low_freq_factor: low,
                high_freq_factor: high,
                original_max_position_embeddings: ctx,
            },
            ..plain
        },
        head_dim,
    );
    let (mut kept, mut divided, mut between) = (0, 0, 0);
    for (s, b) in llama3.iter().zip(&base) {
        let wavelen = 2.0 * std::f64::consts::PI / f64::from(*b);
        if wavelen < ctx as f64 / high {
            assert_eq!(s, b);
            kept += 1;
        } else if wavelen > ctx as f64 / low {
            assert!((f64::from(*s) - f64::from(*b) / factor).abs() <= 1e-7 * f64::from(*b));
            divided += 1;
        } else {
            assert!(*s < *b && f64::from(*s) > f64::from(*b) / factor);
            between += 1;
        }
    }
    assert!(
        kept > 0 && divided > 0 && between > 0,
        "{kept} {divided} {between}"
    );
}

#[test]
fn gpt2_defaults_follow_transformers() {
    let mut c = read_config(&model_dir("gpt2"));
    for key in [
        "n_inner",
        "layer_norm_epsilon",
        "activation_function",
        "tie_word_embeddings",
    ] {
        c.remove(key);
    }
    let r = resolve(&c).expect("gpt2");
    assert_eq!(r.intermediate_size, 4 * r.hidden_size);
    assert_eq!(r.norm_eps, 1e-5);
    assert!(r.tie_word_embeddings);
}

#[test]
fn mistral_without_sliding_window_is_llama() {
    let mut c = read_config(&model_dir("llama"));
    c.insert("model_type".into(), json!("mistral"));
    c.insert("sliding_window".into(), Value::Null);
    assert_eq!(
        resolve(&c).expect("mistral").architecture,
        Architecture::Llama
    );
}

#[test]
fn inconsistent_head_counts_are_rejected() {
    let mut c = read_config(&model_dir("llama"));
    c.insert("num_key_value_heads".into(), json!(3));
    match resolve(&c) {
        Err(ModelError::InvalidConfig { key, .. }) => assert_eq!(key, "num_key_value_heads"),
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}
