//! Broken checkpoints each give their own typed error naming what is wrong.

mod common;

use burn::prelude::*;
use common::{RawTensor, copy_model, read_config, read_raw, write_config, write_raw};
use sdpo_models::{CausalLm, ModelError};
use serde_json::json;

fn load(dir: &std::path::Path) -> Result<CausalLm, ModelError> {
    CausalLm::from_pretrained(dir, &Device::flex())
}

/// Applies `edit` to the tensors of a copy of `name` and tries to load it.
fn load_edited(
    name: &str,
    edit: impl FnOnce(&mut std::collections::BTreeMap<String, RawTensor>),
) -> Result<CausalLm, ModelError> {
    let tmp = copy_model(name);
    let path = tmp.path().join("model.safetensors");
    let mut tensors = read_raw(&path);
    edit(&mut tensors);
    write_raw(&path, &tensors);
    load(tmp.path())
}

#[test]
fn missing_tensor_is_named() {
    let gone = "model.layers.1.mlp.down_proj.weight";
    let err = load_edited("llama", |t| {
        t.remove(gone).expect("tensor exists");
    })
    .expect_err("must fail");
    println!("{err}");
    match err {
        ModelError::MissingTensors { names, .. } => assert_eq!(names, vec![gone.to_string()]),
        other => panic!("expected MissingTensors, got {other:?}"),
    }
}

#[test]
fn untied_model_without_lm_head_is_missing_it() {
    let err = load_edited("llama", |t| {
        t.remove("lm_head.weight").expect("untied llama has a head");
    })
    .expect_err("must fail");
    match err {
        ModelError::MissingTensors { names, .. } => assert_eq!(names, vec!["lm_head.weight"]),
        other => panic!("expected MissingTensors, got {other:?}"),
    }
}

#[test]
fn extra_tensor_is_named() {
    let extra = "model.layers.0.self_attn.extra_proj.weight";
    let err = load_edited("qwen2", |t| {
        let copy = t["model.norm.weight"].clone();
        t.insert(extra.to_string(), copy);
    })
    .expect_err("must fail");
    println!("{err}");
    match err {
        ModelError::UnexpectedTensors { names, .. } => assert_eq!(names, vec![extra.to_string()]),
        other => panic!("expected UnexpectedTensors, got {other:?}"),
    }
}

#[test]
fn wrong_shape_is_named_with_both_shapes() {
    let err = load_edited("gpt2", |t| {
        // Same bytes, other shape: [64] -> [8, 8].
        let ln = t.get_mut("transformer.ln_f.weight").expect("exists");
        assert_eq!(ln.shape, vec![64]);
        ln.shape = vec![8, 8];
    })
    .expect_err("must fail");
    println!("{err}");
    match err {
        ModelError::WrongShapes { mismatches, .. } => {
            assert_eq!(mismatches.len(), 1);
            assert_eq!(mismatches[0].name, "transformer.ln_f.weight");
            assert_eq!(mismatches[0].expected, vec![64]);
            assert_eq!(mismatches[0].found, vec![8, 8]);
        }
        other => panic!("expected WrongShapes, got {other:?}"),
    }
}

#[test]
fn truncated_file_is_reported_as_truncated() {
    let tmp = copy_model("llama_tied");
    let path = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(&path).expect("read");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("write");
    let err = load(tmp.path()).expect_err("must fail");
    println!("{err}");
    match err {
        ModelError::Truncated {
            path: p,
            expected,
            actual,
        } => {
            assert_eq!(p, path);
            assert_eq!(expected, bytes.len() as u64);
            assert_eq!(actual, (bytes.len() / 2) as u64);
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
    // Cut inside the header too.
    std::fs::write(&path, &bytes[..20]).expect("write");
    assert!(matches!(
        load(tmp.path()),
        Err(ModelError::Truncated { .. })
    ));
}

#[test]
fn bad_config_json_is_a_json_error_naming_the_file() {
    let tmp = copy_model("llama");
    std::fs::write(
        tmp.path().join("config.json"),
        "{\"model_type\": \"llama\",",
    )
    .expect("write");
    let err = load(tmp.path()).expect_err("must fail");
    println!("{err}");
    match err {
        ModelError::Json { path, .. } => assert_eq!(path, tmp.path().join("config.json")),
        other => panic!("expected Json, got {other:?}"),
    }
    // A value of the wrong type is a JSON error too.
    let mut config = read_config(&common::model_dir("llama"));
    config.insert("hidden_size".into(), json!("sixty-four"));
    write_config(tmp.path(), &config);
    assert!(matches!(load(tmp.path()), Err(ModelError::Json { .. })));
}

#[test]
fn missing_config_file_is_an_io_error() {
    let tmp = copy_model("llama");
    std::fs::remove_file(tmp.path().join("config.json")).expect("rm");
    assert!(matches!(load(tmp.path()), Err(ModelError::Io { .. })));
}

#[test]
fn unknown_model_type_is_named() {
    let tmp = copy_model("llama");
    let mut config = read_config(tmp.path());
    config.insert("model_type".into(), json!("mamba"));
    write_config(tmp.path(), &config);
    let err = load(tmp.path()).expect_err("must fail");
    println!("{err}");
    assert!(
        err.to_string().contains("config.json"),
        "names the file: {err}"
    );
    match err.without_file() {
        ModelError::UnsupportedModelType { model_type } => assert_eq!(model_type, "mamba"),
        other => panic!("expected UnsupportedModelType, got {other:?}"),
    }
}

#[test]
fn unsupported_options_are_named() {
    let cases = [
        (
            "qwen2",
            "use_sliding_window",
            json!(true),
            "use_sliding_window",
        ),
        ("llama", "sliding_window", json!(4096), "sliding_window"),
        (
            "llama",
            "rope_parameters",
            json!({"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 4.0}),
            "rope_parameters.rope_type",
        ),
        ("llama", "hidden_act", json!("gelu"), "hidden_act"),
        (
            "gpt2",
            "activation_function",
            json!("relu"),
            "activation_function",
        ),
        (
            "gpt2",
            "scale_attn_by_inverse_layer_idx",
            json!(true),
            "scale_attn_by_inverse_layer_idx",
        ),
    ];
    for (model, key, value, expected_option) in cases {
        let tmp = copy_model(model);
        let mut config = read_config(tmp.path());
        config.insert(key.into(), value);
        write_config(tmp.path(), &config);
        match load(tmp.path()).map_err(ModelError::without_file) {
            Err(ModelError::UnsupportedOption { option, .. }) => {
                assert_eq!(option, expected_option, "{model}/{key}")
            }
            other => panic!("{model}/{key}: expected UnsupportedOption, got {other:?}"),
        }
    }
}

#[test]
fn missing_required_config_key_is_named() {
    let tmp = copy_model("llama");
    let mut config = read_config(tmp.path());
    config.remove("num_attention_heads");
    write_config(tmp.path(), &config);
    match load(tmp.path()).map_err(ModelError::without_file) {
        Err(ModelError::MissingConfigKey { key, .. }) => assert_eq!(key, "num_attention_heads"),
        other => panic!("expected MissingConfigKey, got {other:?}"),
    }
}

#[test]
fn directory_without_weights_is_reported() {
    let tmp = copy_model("llama");
    std::fs::remove_file(tmp.path().join("model.safetensors")).expect("rm");
    assert!(matches!(
        load(tmp.path()),
        Err(ModelError::NoWeights { .. })
    ));
}

#[test]
fn unsupported_dtype_is_named() {
    let err = load_edited("llama", |t| {
        let norm = t.get_mut("model.norm.weight").expect("exists");
        norm.dtype = safetensors::Dtype::I32; // same byte width
    })
    .expect_err("must fail");
    match err {
        ModelError::UnsupportedDtype { name, dtype, .. } => {
            assert_eq!(name, "model.norm.weight");
            assert_eq!(dtype, "I32");
        }
        other => panic!("expected UnsupportedDtype, got {other:?}"),
    }
}
