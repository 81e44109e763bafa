//! Writes adapters trained and saved by this crate, with our logits, and the merged models
//! saved as plain checkpoints, for `ci/lora-peft.sh` to load in Python PEFT 0.21.2 and
//! transformers 5.24 (QLoRA cases over bitsandbytes 0.50.2's 4-bit base) and compare (PEFT is the oracle; nothing is checked here but that
//! the export succeeds). Ignored unless run by that script, which sets `SDPO_LORA_EXPORT_DIR`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use common::{Golden, RawTensor, host, model_dir, write_raw};
use safetensors::Dtype;
use sdpo_models::CausalLm;
use sdpo_models::lora::{LoraConfig, TargetModules};
use sdpo_models::quant::{Bnb4bitConfig, QuantType};

/// One exported case: a base checkpoint and the LoRA settings trained on it.
struct Case {
    name: &'static str,
    base: &'static str,
    /// A 4-bit base (QLoRA): PEFT loads the adapter over bitsandbytes' quantization of it.
    quant: Option<Bnb4bitConfig>,
    config: LoraConfig,
}

fn cases() -> Vec<Case> {
    let names = |v: &[&str]| {
        Some(TargetModules::Names(
            v.iter().map(|s| s.to_string()).collect(),
        ))
    };
    vec![
        Case {
            name: "llama_all_linear",
            base: "llama",
            quant: None,
            config: LoraConfig {
                target_modules: Some(TargetModules::AllLinear),
                lora_dropout: 0.0,
                ..LoraConfig::new(4, 8.0)
            },
        },
        Case {
            name: "qwen2_rslora_patterns_modules_to_save",
            base: "qwen2",
            quant: None,
            config: LoraConfig {
                target_modules: names(&["q_proj", "v_proj", "down_proj"]),
                modules_to_save: Some(vec!["o_proj".into()]),
                use_rslora: true,
                rank_pattern: BTreeMap::from([("v_proj".to_string(), 2)]),
                alpha_pattern: BTreeMap::from([("down_proj".to_string(), 3.0)]),
                lora_dropout: 0.0,
                ..LoraConfig::new(8, 16.0)
            },
        },
        Case {
            // PEFT's default targets for the family (q_proj, v_proj).
            name: "qwen3_default_targets",
            base: "qwen3",
            quant: None,
            config: LoraConfig {
                lora_dropout: 0.0,
                ..LoraConfig::new(4, 8.0)
            },
        },
        Case {
            // The fused projections (PEFT has no default for Phi-3).
            name: "phi3_fused_projections",
            base: "phi3",
            quant: None,
            config: LoraConfig {
                target_modules: names(&["qkv_proj", "gate_up_proj", "down_proj"]),
                modules_to_save: Some(vec!["o_proj".into()]),
                lora_dropout: 0.0,
                ..LoraConfig::new(4, 8.0)
            },
        },
        Case {
            name: "gemma3_all_linear",
            base: "gemma3_text",
            quant: None,
            config: LoraConfig {
                target_modules: Some(TargetModules::AllLinear),
                lora_dropout: 0.0,
                ..LoraConfig::new(4, 8.0)
            },
        },
        Case {
            name: "olmo2_named",
            base: "olmo2",
            quant: None,
            config: LoraConfig {
                target_modules: names(&["q_proj", "k_proj", "up_proj"]),
                lora_dropout: 0.0,
                ..LoraConfig::new(2, 4.0)
            },
        },
        Case {
            name: "qlora_llama_nf4_double_quant",
            base: "llama",
            quant: Some(Bnb4bitConfig {
                double_quant: true,
                ..Bnb4bitConfig::default()
            }),
            config: LoraConfig {
                target_modules: Some(TargetModules::AllLinear),
                lora_dropout: 0.0,
                ..LoraConfig::new(4, 8.0)
            },
        },
        Case {
            name: "qlora_qwen2_fp4",
            base: "qwen2",
            quant: Some(Bnb4bitConfig {
                quant_type: QuantType::Fp4,
                ..Bnb4bitConfig::default()
            }),
            config: LoraConfig {
                lora_dropout: 0.0,
                ..LoraConfig::new(8, 16.0)
            },
        },
        Case {
            name: "dora_qwen3_all_linear",
            base: "qwen3",
            quant: None,
            config: LoraConfig {
                target_modules: Some(TargetModules::AllLinear),
                use_dora: true,
                lora_dropout: 0.0,
                ..LoraConfig::new(4, 8.0)
            },
        },
        Case {
            name: "dora_gpt2_conv1d",
            base: "gpt2",
            quant: None,
            config: LoraConfig {
                use_dora: true,
                lora_dropout: 0.0,
                ..LoraConfig::new(4, 16.0)
            },
        },
        Case {
            name: "qdora_llama_nf4_double_quant",
            base: "llama",
            quant: Some(Bnb4bitConfig {
                double_quant: true,
                ..Bnb4bitConfig::default()
            }),
            config: LoraConfig {
                target_modules: Some(TargetModules::AllLinear),
                use_dora: true,
                lora_dropout: 0.0,
                ..LoraConfig::new(4, 8.0)
            },
        },
        Case {
            name: "gpt2_conv1d",
            base: "gpt2",
            quant: None,
            config: LoraConfig {
                modules_to_save: Some(vec!["mlp.c_proj".into()]),
                lora_dropout: 0.0,
                ..LoraConfig::new(4, 16.0)
            },
        },
    ]
}

fn raw_f32(values: Vec<f32>, shape: Vec<usize>) -> RawTensor {
    RawTensor {
        dtype: Dtype::F32,
        shape,
        data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

fn raw_i64(values: Vec<i64>, shape: Vec<usize>) -> RawTensor {
    RawTensor {
        dtype: Dtype::I64,
        shape,
        data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// Attaches the adapter, trains it a few AdamW steps (so B, and the `modules_to_save` copies,
/// are no longer their initial values), saves it, and writes our logits with it on and off.
fn export(case: &Case, out: &Path) {
    let device = Device::flex();
    let train = device.clone().autodiff();
    let base_dir = model_dir(case.base);
    let golden = Golden::open(&base_dir.join("golden.safetensors"));
    let ids = golden.int_tensor("input_ids", &train);
    let mask = golden.int_tensor("attention_mask", &train);

    let mut model = CausalLm::from_pretrained(&base_dir, &train)
        .and_then(|m| match &case.quant {
            Some(quant) => m.quantize_4bit(quant),
            None => Ok(m),
        })
        .and_then(|m| m.attach_lora(&case.config, 7))
        .unwrap_or_else(|e| panic!("{}: {e}", case.name));
    let mut optimizer = AdamWConfig::new().init();
    for _ in 0..3 {
        let logits = model.forward(ids.clone(), mask.clone());
        let loss = logits.square().mean();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optimizer.step(5e-2, model, grads);
    }

    let model = model.valid();
    let dir = out.join(case.name);
    let base = std::fs::canonicalize(&base_dir).expect("base dir");
    model
        .save_adapter(dir.join("adapter"), base.to_str())
        .unwrap_or_else(|e| panic!("{}: {e}", case.name));

    match &case.quant {
        // The adapter merged into a plain checkpoint: transformers must load it with the
        // adapter-on logits.
        None => model
            .clone()
            .merge_adapters()
            .save_pretrained(dir.join("merged"))
            .unwrap_or_else(|e| panic!("{}: {e}", case.name)),
        // How PEFT's side must quantize the base (transformers' BitsAndBytesConfig).
        Some(quant) => {
            let settings = serde_json::json!({
                "load_in_4bit": true,
                "bnb_4bit_quant_type": quant.quant_type.name(),
                "bnb_4bit_use_double_quant": quant.double_quant,
                "bnb_4bit_compute_dtype": quant.compute_dtype.name(),
                "bnb_4bit_quant_storage": quant.quant_storage.name(),
            });
            std::fs::write(dir.join("quantization.json"), settings.to_string())
                .expect("write quantization.json");
        }
    }

    let ids = golden.int_tensor("input_ids", &device);
    let mask = golden.int_tensor("attention_mask", &device);
    let on = model.forward(ids.clone(), mask.clone());
    let off = model.without_adapters().forward(ids, mask);
    let shape = on.dims().to_vec();
    let (ids, ids_shape) = golden.i64("input_ids");
    let (mask, mask_shape) = golden.i64("attention_mask");
    let tensors = BTreeMap::from([
        ("input_ids".to_string(), raw_i64(ids, ids_shape)),
        ("attention_mask".to_string(), raw_i64(mask, mask_shape)),
        ("logits".to_string(), raw_f32(host(on), shape.clone())),
        (
            "logits_adapter_disabled".to_string(),
            raw_f32(host(off), shape),
        ),
    ]);
    write_raw(&dir.join("ours.safetensors"), &tensors);
    println!("exported {} to {}", case.name, dir.display());
}

#[test]
#[ignore = "run by ci/lora-peft.sh, which sets SDPO_LORA_EXPORT_DIR and checks the files in PEFT"]
fn export_trained_adapters_for_peft() {
    let out = std::env::var_os("SDPO_LORA_EXPORT_DIR")
        .filter(|d| !d.is_empty())
        .expect("SDPO_LORA_EXPORT_DIR must name the directory to export into");
    let out = Path::new(&out);
    let cases = cases();
    for case in &cases {
        export(case, out);
    }
    println!("exported {} adapters", cases.len());
}
