//! 4-bit bases (QLoRA) against bitsandbytes 0.50.2 + PEFT 0.21.2 (`fixtures/qlora/`, spec in
//! the fixtures README §4c): the quantizer bit for bit (codes, block scales, double
//! quantization), the dequantized weights exactly on every backend, each layer of two tiny
//! models as transformers quantizes it, the logits with the adapter on and off, and a DPO
//! step's loss and adapter gradients.

mod common;

use std::path::PathBuf;

use burn::prelude::*;
use common::golden_dpo::{check_dpo_golden, fixture_path, golden_cases, read_json};
use common::{Golden, RawTensor, host, max_abs_diff, read_raw};
use safetensors::Dtype;

use sdpo_models::CausalLm;
use sdpo_models::quant::blockwise::{
    Blocks4bit, NestedAbsmax, double_quantize, dynamic_code, pack_bnb_bytes, quantize_4bit,
};
use sdpo_models::quant::{Bnb4bitConfig, Quantized4bit, compute_dtype_from_name};
use serde_json::Value;

fn qlora_dir() -> PathBuf {
    sdpo_testkit::fixtures_dir().join("qlora")
}

fn f32s(t: &RawTensor, name: &str) -> Vec<f32> {
    assert_eq!(t.dtype, Dtype::F32, "{name}: dtype");
    t.data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn u8s(t: &RawTensor, name: &str) -> Vec<u8> {
    assert_eq!(t.dtype, Dtype::U8, "{name}: dtype");
    t.data.clone()
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// Equal as numbers (bitsandbytes' C++ FP4 table decodes code 8 as -0.0, its Python table as
/// +0.0); NaN is never equal.
fn assert_same_numbers(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let differing = got.iter().zip(want).filter(|(g, w)| g != w).count();
    assert_eq!(
        differing,
        0,
        "{what}: {differing} of {} values differ",
        want.len()
    );
}

fn config_of(bnb: &Value) -> Bnb4bitConfig {
    Bnb4bitConfig {
        quant_type: bnb["bnb_4bit_quant_type"]
            .as_str()
            .expect("bnb_4bit_quant_type")
            .parse()
            .expect("quant type"),
        double_quant: bnb["bnb_4bit_use_double_quant"]
            .as_bool()
            .expect("bnb_4bit_use_double_quant"),
        compute_dtype: compute_dtype_from_name(
            bnb["bnb_4bit_compute_dtype"]
                .as_str()
                .expect("bnb_4bit_compute_dtype"),
        )
        .expect("compute dtype"),
        quant_storage: bnb["bnb_4bit_quant_storage"]
            .as_str()
            .expect("bnb_4bit_quant_storage")
            .parse()
            .expect("quant storage"),
    }
}

#[test]
fn quantizer_matches_bitsandbytes_bit_for_bit() {
    let spec = read_json(&qlora_dir().join("quantize.json"));
    let tensors = read_raw(&qlora_dir().join("quantize.safetensors"));
    let get = |key: &str| {
        tensors
            .get(key)
            .unwrap_or_else(|| panic!("{key} missing from quantize.safetensors"))
    };
    let cases = spec["cases"].as_array().expect("cases");
    assert!(!cases.is_empty(), "no cases in quantize.json");
    let mut checked = 0;
    for case in cases {
        let name = case["case"].as_str().expect("case");
        let input_key = format!("input/{}", case["input"].as_str().expect("input"));
        let input = f32s(get(&input_key), &input_key);
        let shape: Vec<usize> = serde_json::from_value(case["shape"].clone()).expect("shape");
        let numel: usize = shape.iter().product();
        assert_eq!(input.len(), numel, "{name}: input size");
        let quant_type = case["quant_type"]
            .as_str()
            .expect("quant_type")
            .parse()
            .expect("quant type");
        let double_quant = case["double_quant"].as_bool().expect("double_quant");
        let key = |part: &str| format!("{name}/{part}");

        let blocks = quantize_4bit(&input, quant_type);
        assert_eq!(
            pack_bnb_bytes(&blocks.codes, quant_type),
            u8s(get(&key("packed")), &key("packed")),
            "{name}: packed codes"
        );
        let code = f32s(get(&key("code")), &key("code"));
        assert_same_numbers(quant_type.code(), &code, &format!("{name}: code table"));
        let nested = if double_quant {
            let nested = double_quantize(&blocks.absmax);
            assert_eq!(
                nested.codes,
                u8s(get(&key("absmax")), &key("absmax")),
                "{name}: 8-bit block scales"
            );
            assert_eq!(
                bits(&nested.absmax),
                bits(&f32s(get(&key("nested_absmax")), &key("nested_absmax"))),
                "{name}: nested absmax"
            );
            assert_eq!(
                bits(&[nested.offset]),
                bits(&f32s(get(&key("offset")), &key("offset"))),
                "{name}: offset (the mean of absmax)"
            );
            assert_eq!(
                bits(&dynamic_code()),
                bits(&f32s(get(&key("nested_code")), &key("nested_code"))),
                "{name}: the dynamic 8-bit code"
            );
            Some(nested)
        } else {
            assert_eq!(
                bits(&blocks.absmax),
                bits(&f32s(get(&key("absmax")), &key("absmax"))),
                "{name}: absmax"
            );
            None
        };

        let want = f32s(get(&key("dequantized")), &key("dequantized"));
        let shape2 = match shape[..] {
            [rows, cols] => [rows, cols],
            _ => [1, numel],
        };
        let config = Bnb4bitConfig {
            quant_type,
            double_quant,
            ..Bnb4bitConfig::default()
        };
        for dev in sdpo_testkit::test_devices!() {
            let weight = Quantized4bit::from_blocks(
                blocks.clone(),
                nested.clone(),
                shape2,
                &config,
                &dev.device,
            );
            assert_same_numbers(
                &host(weight.dequantize()),
                &want,
                &format!("[{}] {name}: dequantized", dev.name),
            );
        }
        checked += 1;
    }
    println!("checked {checked} quantization cases");
}

/// Every QLoRA model case of `fixtures/qlora/` (sorted), with its parsed `golden.json`.
fn model_cases() -> Vec<(String, PathBuf, Value)> {
    golden_cases("qlora")
}

fn quantized_base(name: &str, golden: &Value, device: &Device) -> CausalLm {
    CausalLm::from_pretrained(fixture_path(golden, "base_model_dir"), device)
        .and_then(|m| m.quantize_4bit(&config_of(&golden["bnb_config"])))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn tiny_models_quantize_like_transformers_and_give_peft_logits() {
    for dev in sdpo_testkit::test_devices!() {
        for (name, dir, golden_json) in model_cases() {
            let golden = Golden::open(&dir.join("golden.safetensors"));
            let base = quantized_base(&name, &golden_json, &dev.device);

            let want_layers: Vec<String> =
                serde_json::from_value(golden_json["quantized_modules"].clone()).expect("list");
            let layers = base.quantized_layers();
            let mut got_layers: Vec<String> = layers.iter().map(|(n, _)| n.clone()).collect();
            let mut sorted_want = want_layers.clone();
            got_layers.sort();
            sorted_want.sort();
            assert_eq!(got_layers, sorted_want, "{name}: the quantized layers");
            for (layer, weight) in &layers {
                let what = format!("[{}] {name} {layer}", dev.name);
                let (want, shape) = golden.f32(&format!("quant/{layer}/dequantized"));
                assert_eq!(shape, weight.shape.to_vec(), "{what}: shape");
                assert_same_numbers(&host(weight.dequantize()), &want, &what);
                if let sdpo_models::quant::BlockScales::Nested(nested) = &weight.scales {
                    let (offset, _) = golden.f32(&format!("quant/{layer}/offset"));
                    assert_eq!(bits(&[nested.offset]), bits(&offset), "{what}: offset");
                    let (absmax, _) = golden.f32(&format!("quant/{layer}/nested_absmax"));
                    assert_eq!(
                        bits(&host(nested.absmax.clone())),
                        bits(&absmax),
                        "{what}: nested absmax"
                    );
                }
            }

            let ids = golden.int_tensor("input_ids", &dev.device);
            let mask = golden.int_tensor("attention_mask", &dev.device);
            let model = base
                .load_adapter(fixture_path(&golden_json, "adapter_dir"))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            for (model, key) in [
                (&model, "logits"),
                (&model.without_adapters(), "logits_adapter_disabled"),
            ] {
                let (want, _) = golden.f32(key);
                let got = host(model.forward(ids.clone(), mask.clone()));
                let d = max_abs_diff(&got, &want);
                assert!(
                    d <= 1e-4,
                    "[{}] {name} {key}: max |ours - PEFT| = {d}",
                    dev.name
                );
            }
        }
    }
}

#[test]
fn dpo_on_a_4bit_base_matches_peft_loss_and_adapter_gradients() {
    for dev in sdpo_testkit::test_devices!() {
        for (name, dir, golden_json) in model_cases() {
            let train = dev.device.clone().autodiff();
            let policy = quantized_base(&name, &golden_json, &train)
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

/// Hostile 4-bit tensors are refused naming the tensor: a wrong code count, scales of the
/// wrong length, codes out of range, non-finite scales.
#[test]
fn malformed_4bit_tensors_are_refused_naming_the_tensor() {
    use sdpo_models::quant::check_blocks;
    let good = quantize_4bit(&vec![0.5; 130], sdpo_models::quant::QuantType::Nf4);
    let nested = double_quantize(&good.absmax);
    let name = "model.layers.0.mlp.up_proj.weight";
    check_blocks(name, [10, 13], &good, None).expect("a well-formed tensor");
    check_blocks(name, [10, 13], &good, Some(&nested)).expect("well-formed nested scales");
    let cases: Vec<(&str, Blocks4bit, Option<NestedAbsmax>)> = vec![
        (
            "codes",
            Blocks4bit {
                codes: good.codes[..129].to_vec(),
                ..good.clone()
            },
            None,
        ),
        (
            "absmax",
            Blocks4bit {
                absmax: good.absmax[..2].to_vec(),
                ..good.clone()
            },
            None,
        ),
        (
            "4-bit code",
            Blocks4bit {
                codes: {
                    let mut c = good.codes.clone();
                    c[7] = 16;
                    c
                },
                ..good.clone()
            },
            None,
        ),
        (
            "finite",
            Blocks4bit {
                absmax: vec![1.0, f32::NAN, 1.0],
                ..good.clone()
            },
            None,
        ),
        (
            "quantized block scales",
            good.clone(),
            Some(NestedAbsmax {
                codes: vec![0; 2],
                ..nested.clone()
            }),
        ),
        (
            "nested scales",
            good.clone(),
            Some(NestedAbsmax {
                absmax: vec![],
                ..nested.clone()
            }),
        ),
    ];
    for (expect, blocks, nested) in cases {
        let err = check_blocks(name, [10, 13], &blocks, nested.as_ref())
            .expect_err(expect)
            .to_string();
        assert!(err.contains(name), "{err}");
        assert!(err.contains(expect), "{expect}: {err}");
    }
}

/// Loading layer by layer into 4 bits gives the model that quantizing a loaded one gives, on
/// every tiny family (tied and untied heads, fused projections, GPT-2's Conv1D).
#[test]
fn loading_layer_by_layer_into_4_bits_equals_quantizing_the_loaded_model() {
    let config = Bnb4bitConfig {
        double_quant: true,
        ..Bnb4bitConfig::default()
    };
    for dev in sdpo_testkit::test_devices!() {
        for name in common::tiny_model_names() {
            let dir = common::model_dir(&name);
            let whole = CausalLm::from_pretrained(&dir, &dev.device)
                .and_then(|m| m.quantize_4bit(&config))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let streamed = CausalLm::from_pretrained_4bit(&dir, &config, &dev.device)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                streamed.quantized_bytes(),
                whole.quantized_bytes(),
                "[{}] {name}: 4-bit bytes",
                dev.name
            );
            let golden = Golden::open(&dir.join("golden.safetensors"));
            let ids = golden.int_tensor("input_ids", &dev.device);
            let mask = golden.int_tensor("attention_mask", &dev.device);
            let a = host(whole.forward(ids.clone(), mask.clone()));
            let b = host(streamed.forward(ids, mask));
            assert_eq!(bits(&a), bits(&b), "[{}] {name}: logits", dev.name);
            assert!(whole.is_quantized(), "{name}: nothing quantized");
        }
    }
}
