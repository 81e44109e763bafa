//! DoRA (`use_dora`, PEFT 0.21's weight-decomposed LoRA) against PEFT's own goldens in
//! `fixtures/dora/` (tools/make_dora_fixtures.py): adapters PEFT saved load and give PEFT's
//! logits with the adapter on, disabled and merged; a new DoRA adapter starts from PEFT's
//! magnitude; a DPO loss and its gradient w.r.t. every `lora_A`, `lora_B` and
//! `lora_magnitude_vector` match, on a float and on a 4-bit base; saved adapters are PEFT's
//! files.

mod common;

use std::path::Path;

use burn::prelude::*;
use common::golden_dpo::{check_dpo_golden, fixture_path, golden_cases};
use common::{Golden, host, max_abs_diff, read_raw};
use sdpo_models::CausalLm;
use sdpo_models::lora::{LoraConfig, TargetModules};
use sdpo_models::quant::{Bnb4bitConfig, compute_dtype_from_name};
use serde_json::Value;

/// The case's base: the float checkpoint, quantized to 4 bits when the golden has a
/// `bnb_config`.
fn base(name: &str, golden: &Value, device: &Device) -> CausalLm {
    let model = CausalLm::from_pretrained(fixture_path(golden, "base_model_dir"), device)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let bnb = &golden["bnb_config"];
    if bnb.is_null() {
        return model;
    }
    let config = Bnb4bitConfig {
        quant_type: bnb["bnb_4bit_quant_type"]
            .as_str()
            .expect("quant type")
            .parse()
            .expect("nf4/fp4"),
        double_quant: bnb["bnb_4bit_use_double_quant"]
            .as_bool()
            .expect("double quant"),
        compute_dtype: compute_dtype_from_name(
            bnb["bnb_4bit_compute_dtype"].as_str().expect("dtype"),
        )
        .expect("compute dtype"),
        ..Bnb4bitConfig::default()
    };
    model
        .quantize_4bit(&config)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn logits(model: &CausalLm, golden: &Golden, device: &Device) -> Vec<f32> {
    let ids = golden.int_tensor("input_ids", device);
    let mask = golden.int_tensor("attention_mask", device);
    host(model.forward(ids, mask))
}

#[test]
fn dora_adapters_give_peft_logits_on_disabled_and_merged() {
    for dev in sdpo_testkit::test_devices!() {
        for (name, dir, golden_json) in golden_cases("dora") {
            let golden = Golden::open(&dir.join("golden.safetensors"));
            let model = base(&name, &golden_json, &dev.device)
                .load_adapter(fixture_path(&golden_json, "adapter_dir"))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(
                model
                    .lora_branches()
                    .iter()
                    .all(|(_, b)| b.magnitude.is_some()),
                "{name}: every branch is weight-decomposed"
            );
            let mut cases = vec![
                (model.clone(), "logits"),
                (model.without_adapters(), "logits_adapter_disabled"),
            ];
            if golden.names().iter().any(|n| n == "logits_merged") {
                cases.push((model.clone().merge_adapters(), "logits_merged"));
            }
            for (model, key) in cases {
                let (want, _) = golden.f32(key);
                let d = max_abs_diff(&logits(&model, &golden, &dev.device), &want);
                assert!(
                    d <= 1e-4,
                    "[{}] {name} {key}: max |ours - PEFT| = {d}",
                    dev.name
                );
            }
            let on = logits(&model, &golden, &dev.device);
            let off = logits(&model.without_adapters(), &golden, &dev.device);
            assert!(max_abs_diff(&on, &off) > 1.0, "{name}: the adapter matters");
        }
    }
}

/// A new DoRA adapter (PEFT's default init: B = 0) starts with PEFT's magnitude `‖W‖` per
/// output row and leaves the model's output unchanged.
#[test]
fn a_new_dora_adapter_starts_from_peft_magnitude() {
    for dev in sdpo_testkit::test_devices!() {
        for (name, dir, golden_json) in golden_cases("dora") {
            if !golden_json["bnb_config"].is_null() {
                continue;
            }
            let golden = Golden::open(&dir.join("golden.safetensors"));
            let peft = &golden_json["peft_config"];
            let targets: Vec<String> =
                serde_json::from_value(peft["target_modules"].clone()).expect("targets");
            let config = LoraConfig {
                target_modules: Some(TargetModules::Names(targets)),
                use_dora: true,
                lora_dropout: 0.0,
                ..LoraConfig::new(
                    peft["r"].as_u64().expect("r") as usize,
                    peft["lora_alpha"].as_f64().expect("lora_alpha"),
                )
            };
            let plain = base(&name, &golden_json, &dev.device);
            let model = plain
                .clone()
                .attach_lora(&config, 7)
                .unwrap_or_else(|e| panic!("{e}"));
            let branches = model.lora_branches();
            let init_keys: Vec<String> = golden
                .names()
                .into_iter()
                .filter(|n| n.starts_with("init_magnitude/"))
                .collect();
            assert_eq!(
                init_keys.len(),
                branches.len(),
                "{name}: one magnitude per layer"
            );
            for (layer, branch) in &branches {
                let key = format!("init_magnitude/base_model.model.{layer}.lora_magnitude_vector");
                let (want, _) = golden.f32(&key);
                let got = host(branch.magnitude.as_ref().expect("magnitude").val());
                let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let d = max_abs_diff(&got, &want);
                assert!(
                    d <= 1e-6 * scale,
                    "[{}] {name} {key}: differs by {d}",
                    dev.name
                );
            }
            let d = max_abs_diff(
                &logits(&model, &golden, &dev.device),
                &logits(&plain, &golden, &dev.device),
            );
            assert!(
                d <= 1e-5,
                "[{}] {name}: a new adapter moved the logits by {d}",
                dev.name
            );
        }
    }
}

#[test]
fn dpo_with_dora_matches_peft_loss_and_gradients() {
    for dev in sdpo_testkit::test_devices!() {
        for (name, dir, golden_json) in golden_cases("dora") {
            let train = dev.device.clone().autodiff();
            let policy = base(&name, &golden_json, &train)
                .load_adapter(fixture_path(&golden_json, "adapter_dir"))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            check_dpo_golden(
                &policy,
                &golden_json["dpo"],
                &dir.join("dpo_grads.safetensors"),
                &dev.device,
                &format!("[{}] {name}", dev.name),
            );
        }
    }
}

/// `save_adapter` writes what PEFT wrote: the same keys, shapes and values, and
/// `"use_dora": true`; the saved adapter loads back to the same model.
#[test]
fn saved_dora_adapters_are_peft_files() {
    let device = Device::default();
    for (name, dir, golden_json) in golden_cases("dora") {
        if !golden_json["bnb_config"].is_null() {
            continue;
        }
        let adapter_dir = fixture_path(&golden_json, "adapter_dir");
        let model = base(&name, &golden_json, &device)
            .load_adapter(&adapter_dir)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let out = tempfile::tempdir().expect("tempdir");
        model.save_adapter(out.path(), Some("base")).expect("save");
        let ours = read_raw(&out.path().join("adapter_model.safetensors"));
        let peft = read_raw(&adapter_dir.join("adapter_model.safetensors"));
        assert_eq!(
            ours.keys().collect::<Vec<_>>(),
            peft.keys().collect::<Vec<_>>(),
            "{name}: tensor names"
        );
        for (key, theirs) in &peft {
            assert_eq!(ours[key].shape, theirs.shape, "{name} {key}: shape");
            assert_eq!(ours[key].data, theirs.data, "{name} {key}: values");
        }
        let config = read_config_json(out.path());
        assert_eq!(config["use_dora"], Value::Bool(true), "{name}: use_dora");
        let golden = Golden::open(&dir.join("golden.safetensors"));
        let reloaded = base(&name, &golden_json, &device)
            .load_adapter(out.path())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            logits(&reloaded, &golden, &device),
            logits(&model, &golden, &device),
            "{name}: reloaded logits"
        );
    }
}

fn read_config_json(dir: &Path) -> Value {
    common::golden_dpo::read_json(&dir.join("adapter_config.json"))
}

/// A DoRA adapter file without its magnitudes is refused naming the missing tensor.
#[test]
fn a_dora_adapter_without_magnitudes_is_refused() {
    let device = Device::default();
    let (name, _, golden_json) = golden_cases("dora")
        .into_iter()
        .find(|(_, _, g)| g["bnb_config"].is_null())
        .expect("a float case");
    let adapter_dir = fixture_path(&golden_json, "adapter_dir");
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        adapter_dir.join("adapter_config.json"),
        tmp.path().join("adapter_config.json"),
    )
    .expect("copy config");
    let mut tensors = read_raw(&adapter_dir.join("adapter_model.safetensors"));
    let dropped = tensors
        .keys()
        .find(|k| k.ends_with("lora_magnitude_vector"))
        .cloned()
        .expect("a magnitude");
    tensors.remove(&dropped);
    common::write_raw(&tmp.path().join("adapter_model.safetensors"), &tensors);
    let err = base(&name, &golden_json, &device)
        .load_adapter(tmp.path())
        .expect_err("a missing magnitude")
        .to_string();
    assert!(err.contains(&dropped), "{err}");
}
