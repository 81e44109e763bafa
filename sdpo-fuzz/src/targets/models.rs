//! Model files: `config.json` of every family, safetensors weights (whole, sharded with an
//! index, read one layer at a time for a 4-bit base), PEFT adapters (`adapter_config.json`,
//! `adapter_model.safetensors`, LoRA and DoRA). Each runs the loader `sdpo train` runs on the
//! flex backend: [`CausalLm::from_pretrained`], [`CausalLm::from_pretrained_4bit`],
//! [`CausalLm::load_adapter`].

use std::path::Path;
use std::sync::OnceLock;

use arbitrary::{Result, Unstructured};
use burn::tensor::Device;
use sdpo_models::CausalLm;
use sdpo_models::quant::Bnb4bitConfig;
use serde_json::{Value, json};

use crate::structured::{perturb, safetensors, to_json, value};
use crate::{Rejection, workspace_root};

fn device() -> Device {
    Device::flex()
}

fn link(dir: &Path, fixture: &str, names: &[&str]) -> std::io::Result<()> {
    let from = workspace_root().join(fixture);
    for name in names {
        std::os::unix::fs::symlink(from.join(name), dir.join(name))?;
    }
    Ok(())
}

fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

const CONFIG_KEYS: [&str; 24] = [
    "model_type",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "vocab_size",
    "max_position_embeddings",
    "rms_norm_eps",
    "rope_theta",
    "rope_scaling",
    "tie_word_embeddings",
    "hidden_act",
    "sliding_window",
    "layer_types",
    "n_embd",
    "n_layer",
    "n_head",
    "torch_dtype",
    "attention_bias",
    "final_logit_softcapping",
    "rope_parameters",
    "architectures",
];

const MODEL_TYPES: [&str; 12] = [
    "llama",
    "qwen2",
    "qwen3",
    "gpt2",
    "gemma2",
    "gemma3_text",
    "mistral",
    "phi3",
    "olmo2",
    "smollm3",
    "bert",
    "",
];

/// A `config.json`: a fixture family's config with values swapped for edge cases.
fn config_json(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    let mut config = json!({
        "model_type": u.choose(&MODEL_TYPES)?,
        "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 320,
        "max_position_embeddings": 128, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
        "tie_word_embeddings": false,
    });
    for _ in 0..u.int_in_range(0..=4)? {
        let key = *u.choose(&CONFIG_KEYS)?;
        config[key] = match u.int_in_range(0..=3)? {
            0 => json!(*u.choose(&[0u64, 1, 3, 1 << 20, 1 << 31, u64::MAX])?),
            1 => {
                json!({"rope_type": u.choose(&["linear", "llama3", "yarn", "longrope", "dynamic", "x"])?, "factor": value(u, &[], 0)?})
            }
            _ => value(u, &CONFIG_KEYS, 2)?,
        };
    }
    let config = perturb(u, config, &CONFIG_KEYS)?;
    to_json(u, &config)
}

/// `config.json` next to the tiny Llama's weights.
fn model_config(path: &Path, _: &[u8]) -> std::result::Result<(), Rejection> {
    link(
        parent(path),
        "fixtures/models/llama",
        &["model.safetensors"],
    )?;
    CausalLm::from_pretrained(parent(path), &device())?;
    Ok(())
}

const LLAMA_TENSORS: [&str; 6] = [
    "model.embed_tokens.weight",
    "model.layers.0.self_attn.q_proj.weight",
    "model.layers.0.mlp.up_proj.weight",
    "model.norm.weight",
    "lm_head.weight",
    "model.layers.1.input_layernorm.weight",
];

fn weights(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    safetensors(u, &LLAMA_TENSORS)
}

/// `model.safetensors` under the tiny Llama's `config.json`.
fn model_safetensors(path: &Path, _: &[u8]) -> std::result::Result<(), Rejection> {
    link(parent(path), "fixtures/models/llama", &["config.json"])?;
    CausalLm::from_pretrained(parent(path), &device())?;
    Ok(())
}

/// `model.safetensors` read one layer at a time and quantized to NF4 (`load_in_4bit`).
fn model_safetensors_4bit(path: &Path, _: &[u8]) -> std::result::Result<(), Rejection> {
    link(parent(path), "fixtures/models/llama", &["config.json"])?;
    CausalLm::from_pretrained_4bit(parent(path), &Bnb4bitConfig::default(), &device())?;
    Ok(())
}

/// `model.safetensors.index.json` over the tiny Llama's weights (linked as two names).
fn shard_index(path: &Path, _: &[u8]) -> std::result::Result<(), Rejection> {
    let dir = parent(path);
    link(dir, "fixtures/models/llama", &["config.json"])?;
    std::os::unix::fs::symlink(
        workspace_root().join("fixtures/models/llama/model.safetensors"),
        dir.join("model-00001-of-00002.safetensors"),
    )?;
    CausalLm::from_pretrained(dir, &device())?;
    Ok(())
}

fn index_json(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    let files = [
        "model-00001-of-00002.safetensors",
        "model-00001-of-00002.safetensors",
        "missing.safetensors",
        "../x.safetensors",
        "/dev/zero",
        "",
    ];
    let mut map = serde_json::Map::new();
    for name in LLAMA_TENSORS {
        if u.ratio(7, 8)? {
            map.insert(name.into(), json!(u.choose(&files)?));
        }
    }
    let index = json!({"metadata": {"total_size": u.arbitrary::<u32>()?}, "weight_map": Value::Object(map)});
    let index = perturb(u, index, &["metadata", "weight_map", "total_size"])?;
    to_json(u, &index)
}

/// The tiny Llama as a base for adapters, loaded once.
fn base() -> std::result::Result<CausalLm, Rejection> {
    static BASE: OnceLock<std::result::Result<CausalLm, String>> = OnceLock::new();
    BASE.get_or_init(|| {
        CausalLm::from_pretrained(workspace_root().join("fixtures/models/llama"), &device())
            .map_err(|e| e.to_string())
    })
    .clone()
    .map_err(|e| format!("the fuzz harness's base model: {e}").into())
}

/// `adapter_config.json` next to the LoRA fixture's weights, loaded onto the tiny Llama.
fn adapter_config(path: &Path, _: &[u8]) -> std::result::Result<(), Rejection> {
    link(
        parent(path),
        "fixtures/lora/llama_r4",
        &["adapter_model.safetensors"],
    )?;
    base()?.load_adapter(parent(path))?;
    Ok(())
}

const ADAPTER_KEYS: [&str; 16] = [
    "peft_type",
    "r",
    "lora_alpha",
    "target_modules",
    "lora_dropout",
    "bias",
    "use_rslora",
    "use_dora",
    "modules_to_save",
    "fan_in_fan_out",
    "rank_pattern",
    "alpha_pattern",
    "base_model_name_or_path",
    "task_type",
    "layers_to_transform",
    "init_lora_weights",
];

fn adapter_config_json(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    let modules = [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "up_proj",
        "down_proj",
        "gate_proj",
        "all-linear",
        "lm_head",
        ".*",
        "(",
        "",
    ];
    let targets: Vec<&str> = (0..u.int_in_range(0..=4)?)
        .map(|_| u.choose(&modules).copied())
        .collect::<Result<_>>()?;
    let config = json!({
        "peft_type": u.choose(&["LORA", "lora", "IA3", ""])?,
        "r": *u.choose(&[4u64, 0, 1, 1 << 20, u64::MAX])?,
        "lora_alpha": value(u, &[], 0)?,
        "target_modules": if u.arbitrary()? { json!(targets) } else { json!(u.choose(&modules)?) },
        "lora_dropout": 0.0,
        "bias": u.choose(&["none", "all", "lora_only"])?,
        "use_dora": u.arbitrary::<bool>()?,
        "rank_pattern": {"q_proj": u.int_in_range(0..=8u32)?},
        "task_type": "CAUSAL_LM",
    });
    let config = perturb(u, config, &ADAPTER_KEYS)?;
    to_json(u, &config)
}

/// `adapter_model.safetensors` under the LoRA fixture's config, onto the tiny Llama.
fn adapter_safetensors(path: &Path, _: &[u8]) -> std::result::Result<(), Rejection> {
    link(
        parent(path),
        "fixtures/lora/llama_r4",
        &["adapter_config.json"],
    )?;
    base()?.load_adapter(parent(path))?;
    Ok(())
}

fn adapter_weights(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    safetensors(
        u,
        &[
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
            "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight",
            "base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight",
            "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector",
        ],
    )
}

const MODEL_LOCATORS: &[&str] = &[
    "has no `",
    "shape",
    "dtype",
    "value `",
    "option",
    "model_type",
    "tensor(s)",
    "LoRA setting",
    "target_modules",
];

/// The model targets.
pub(crate) static TARGETS: [crate::Target; 7] = [
    crate::Target {
        name: "model_config",
        about: "config.json of every family through CausalLm::from_pretrained",
        file_name: "config.json",
        names: &[],
        seeds: &[
            "fixtures/models/*/config.json",
            "fixtures/smollm2/config.json",
        ],
        generate: config_json,
        run: model_config,
        locators: MODEL_LOCATORS,
    },
    crate::Target {
        name: "model_safetensors",
        about: "model.safetensors (header and body) through CausalLm::from_pretrained",
        file_name: "model.safetensors",
        names: &[],
        seeds: &[
            "fixtures/models/llama/model.safetensors",
            "fixtures/models/llama_tied/model.safetensors",
        ],
        generate: weights,
        run: model_safetensors,
        locators: MODEL_LOCATORS,
    },
    crate::Target {
        name: "model_safetensors_4bit",
        about: "model.safetensors read layer by layer and quantized to NF4 (CausalLm::from_pretrained_4bit)",
        file_name: "model.safetensors",
        names: &[],
        seeds: &["fixtures/models/llama/model.safetensors"],
        generate: weights,
        run: model_safetensors_4bit,
        locators: MODEL_LOCATORS,
    },
    crate::Target {
        name: "shard_index",
        about: "model.safetensors.index.json (sharded checkpoints) through CausalLm::from_pretrained",
        file_name: "model.safetensors.index.json",
        names: &["model.safetensors.index.json", ".safetensors"],
        seeds: &["fixtures/fuzz/seeds/model.safetensors.index.json"],
        generate: index_json,
        run: shard_index,
        locators: MODEL_LOCATORS,
    },
    crate::Target {
        name: "adapter_config",
        about: "PEFT's adapter_config.json through CausalLm::load_adapter",
        file_name: "adapter_config.json",
        names: &[],
        seeds: &[
            "fixtures/lora/*/adapter_config.json",
            "fixtures/dora/*/adapter_config.json",
        ],
        generate: adapter_config_json,
        run: adapter_config,
        locators: MODEL_LOCATORS,
    },
    crate::Target {
        name: "adapter_safetensors",
        about: "PEFT's adapter_model.safetensors through CausalLm::load_adapter",
        file_name: "adapter_model.safetensors",
        names: &[],
        seeds: &["fixtures/lora/llama_r4/adapter_model.safetensors"],
        generate: adapter_weights,
        run: adapter_safetensors,
        locators: MODEL_LOCATORS,
    },
    crate::Target {
        name: "safetensors_header",
        about: "any safetensors header (caches, gradients, goldens) through checkpoint::read_header",
        file_name: "tensors.safetensors",
        names: &[],
        seeds: &["fixtures/**/*.safetensors"],
        generate: weights,
        run: read_header,
        locators: MODEL_LOCATORS,
    },
];

fn read_header(path: &Path, _: &[u8]) -> std::result::Result<(), Rejection> {
    sdpo_models::checkpoint::read_header(path)?;
    Ok(())
}
