//! The `README.md` model card a run leaves in `output_dir`, laid out as TRL's
//! (`trl/templates/lm_model_card.md`, written by `create_model_card`): YAML front matter
//! (`base_model`, `datasets`, `library_name`, `model_name`, `tags`), what the model was
//! fine-tuned from and on, a quick start with transformers, the training procedure (method with
//! its paper, the hyper-parameters that define the run, the final metrics) and the framework
//! versions, then the citations. The model card on the Hub renders it as TRL's does.

use std::path::{Component, Path};

use sdpo_core::LossType;

use crate::config::TrainConfig;
use crate::error::{TrainError, io};
use crate::observer::MetricsRecord;

/// The file name of the model card.
pub const MODEL_CARD: &str = "README.md";

/// burn's version, pinned exactly in the workspace `Cargo.toml` (a test checks the two agree).
pub const BURN_VERSION: &str = "0.22.1";
/// tokenizers' version, pinned exactly in the workspace `Cargo.toml` (a test checks it).
pub const TOKENIZERS_VERSION: &str = "0.22.2";

const SDPO_CITATION: &str = "@misc{dong2025selective,
    title         = {{Not All Preferences are What You Need for Post-Training: Selective Alignment Strategy for Preference Optimization}},
    author        = {Zhijin Dong},
    year          = 2025,
    eprint        = {arXiv:2507.07725}
}";

const DPO_CITATION: &str = "@inproceedings{rafailov2023direct,
    title        = {{Direct Preference Optimization: Your Language Model is Secretly a Reward Model}},
    author       = {Rafael Rafailov and Archit Sharma and Eric Mitchell and Christopher D. Manning and Stefano Ermon and Chelsea Finn},
    year         = 2023,
    booktitle    = {Advances in Neural Information Processing Systems 36: Annual Conference on Neural Information Processing Systems 2023, NeurIPS 2023, New Orleans, LA, USA, December 10 - 16, 2023},
    url          = {http://papers.nips.cc/paper_files/paper/2023/hash/a85b405ed65c6477a4fe8302b5e06ce7-Abstract-Conference.html},
    editor       = {Alice Oh and Tristan Naumann and Amir Globerson and Kate Saenko and Sergey Levine},
}";

/// The token-level methods' papers: `loss_type`, the name, the title, the arXiv id and the
/// citation (authors as the arXiv entry lists them are left to the reader's tool: the eprint
/// identifies the paper).
const TOKEN_METHOD_PAPERS: &[(LossType, &str, &str, &str, &str)] = &[
    (
        LossType::Confpo,
        "ConfPO",
        "ConfPO: Exploiting Policy Model Confidence for Critical Token Selection in Preference Optimization",
        "2506.08712",
        "@misc{confpo2025,
    title         = {{ConfPO: Exploiting Policy Model Confidence for Critical Token Selection in Preference Optimization}},
    year          = 2025,
    eprint        = {arXiv:2506.08712}
}",
    ),
    (
        LossType::Sepo,
        "SePO (Selective Preference Optimization)",
        "Selective Preference Optimization via Token-Level Reward Function Estimation",
        "2408.13518",
        "@misc{sepo2024,
    title         = {{Selective Preference Optimization via Token-Level Reward Function Estimation}},
    year          = 2024,
    eprint        = {arXiv:2408.13518}
}",
    ),
    (
        LossType::Tisdpo,
        "TIS-DPO",
        "TIS-DPO: Token-level Importance Sampling for Direct Preference Optimization With Estimated Weights",
        "2410.04350",
        "@misc{tisdpo2024,
    title         = {{TIS-DPO: Token-level Importance Sampling for Direct Preference Optimization With Estimated Weights}},
    year          = 2024,
    eprint        = {arXiv:2410.04350}
}",
    ),
    (
        LossType::CriticalToken,
        "critical-token DPO (cDPO)",
        "Critical Tokens Matter: Token-Level Contrastive Estimation Enhances LLM's Reasoning Capability",
        "2411.19943",
        "@misc{criticaltokens2024,
    title         = {{Critical Tokens Matter: Token-Level Contrastive Estimation Enhances LLM's Reasoning Capability}},
    year          = 2024,
    eprint        = {arXiv:2411.19943}
}",
    ),
    (
        LossType::Tgdpo,
        "TGDPO",
        "TGDPO: Harnessing Token-Level Reward Guidance for Enhancing Direct Preference Optimization",
        "2506.14574",
        "@misc{tgdpo2025,
    title         = {{TGDPO: Harnessing Token-Level Reward Guidance for Enhancing Direct Preference Optimization}},
    year          = 2025,
    eprint        = {arXiv:2506.14574}
}",
    ),
];

const TR_DPO_CITATION: &str = "@misc{gorbatovski2024learn,
    title         = {{Learn Your Reference Model for Real Good Alignment}},
    author        = {Alexey Gorbatovski and Boris Shaposhnikov and Alexey Malakhov and Nikita Surnachev and Yaroslav Aksenov and Ian Maksimov and Nikita Balagansky and Daniil Gavrilov},
    year          = 2024,
    eprint        = {arXiv:2404.09656}
}";

/// The Hub id a local path stands for: a Hugging Face cache snapshot
/// (`.../models--owner--name/snapshots/<sha>`) gives `owner/name`; any other path is not a Hub
/// id (`None`), as TRL leaves `base_model` out for a local directory.
pub fn hub_id_of(path: &Path) -> Option<String> {
    path.components().rev().find_map(|part| match part {
        Component::Normal(name) => {
            let name = name.to_str()?;
            ["models--", "datasets--"]
                .iter()
                .find_map(|prefix| name.strip_prefix(prefix))
                .map(|id| id.replace("--", "/"))
        }
        _ => None,
    })
}

/// Everything the card says besides the configuration.
#[derive(Debug, Clone, Default)]
pub struct CardFacts {
    /// The run's records (`metrics.jsonl`); the last training and evaluation values are
    /// reported.
    pub records: Vec<MetricsRecord>,
    /// The backend the run trained on, in words.
    pub backend: String,
    /// The checkpoint loaded as the final model (`load_best_model_at_end`), with its metric.
    pub best: Option<(String, f64)>,
}

fn yaml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{}\"", s.escape_default()))
}

/// The method the loss configuration trains with: its name, paper title and arXiv id, and
/// BibTeX.
fn method(config: &TrainConfig) -> (&'static str, &'static str, &'static str, &'static str) {
    if let Some(method) = TOKEN_METHOD_PAPERS
        .iter()
        .find(|paper| config.loss.loss_types() == [paper.0])
    {
        return (method.1, method.2, method.3, method.4);
    }
    if config.loss.loss_types().contains(&LossType::Sdpo) {
        (
            "SDPO (Selective DPO)",
            "Not All Preferences are What You Need for Post-Training: Selective Alignment Strategy for Preference Optimization",
            "2507.07725",
            SDPO_CITATION,
        )
    } else {
        (
            "DPO",
            "Direct Preference Optimization: Your Language Model is Secretly a Reward Model",
            "2305.18290",
            DPO_CITATION,
        )
    }
}

/// The model card's text.
pub fn render(config: &TrainConfig, facts: &CardFacts) -> String {
    let base = hub_id_of(&config.model_name_or_path);
    let dataset = config
        .data
        .dataset_name
        .as_deref()
        .and_then(|name| hub_id_of(Path::new(name)).or_else(|| Some(name.to_string())))
        .filter(|name| !Path::new(name).is_absolute());
    let model_name = config
        .output_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let (method_name, paper_title, paper_id, citation) = method(config);
    let mut tags = vec!["generated_from_trainer", "sdpo-rs", "dpo"];
    if config.loss.loss_types().contains(&LossType::Sdpo) {
        tags.push("sdpo");
    }
    if config.sync_ref_model {
        tags.push("tr-dpo");
    }
    let mut out = String::from("---\n");
    if let Some(base) = &base {
        out += &format!("base_model: {}\n", yaml_string(base));
    }
    if let Some(dataset) = &dataset {
        out += &format!("datasets: {}\n", yaml_string(dataset));
    }
    let library = if config.use_peft {
        "peft"
    } else {
        "transformers"
    };
    out += &format!(
        "library_name: {library}\nmodel_name: {}\ntags:\n",
        yaml_string(&model_name)
    );
    for tag in &tags {
        out += &format!("- {tag}\n");
    }
    out += "---\n\n";
    out += &format!("# Model Card for {model_name}\n\n");
    let from = match &base {
        Some(base) => format!("[{base}](https://huggingface.co/{base})"),
        None => format!("`{}`", config.model_name_or_path.display()),
    };
    out += &format!("This model is a fine-tuned version of {from}");
    if let Some(dataset) = &dataset {
        out += &format!(" on the [{dataset}](https://huggingface.co/datasets/{dataset}) dataset");
    }
    out += &format!(
        ".\nIt has been trained using [sdpo-rs]({}).\n\n",
        env!("CARGO_PKG_REPOSITORY")
    );
    out += "## Quick start\n\n```python\nfrom transformers import pipeline\n\n";
    out += "question = \"If you had a time machine, but could only go to the past or the future once and never return, which would you choose and why?\"\n";
    out += &format!(
        "generator = pipeline(\"text-generation\", model={}, device_map=\"auto\")\n",
        yaml_string(&config.output_dir.to_string_lossy())
    );
    out += "output = generator([{\"role\": \"user\", \"content\": question}], max_new_tokens=128, return_full_text=False)[0]\nprint(output[\"generated_text\"])\n```\n\n";
    if config.use_peft {
        out += "The directory holds a LoRA adapter in PEFT's format: transformers loads it onto \
                its base model when `peft` is installed.\n\n";
    }
    out += "## Training procedure\n\n";
    out += &format!(
        "This model was trained with {method_name}, a method introduced in [{paper_title}](https://huggingface.co/papers/{paper_id})"
    );
    if config.sync_ref_model {
        out += &format!(
            ", with the reference updated as in TR-DPO (every {} steps, α = {})",
            config.ref_model_sync_steps, config.ref_model_mixup_alpha
        );
    }
    out += ".\n\n### Hyperparameters\n\n| key | value |\n|---|---|\n";
    let map = config.to_map();
    for key in HYPERPARAMETERS {
        if let Some(value) = map.get(*key).filter(|v| !v.is_null()) {
            out += &format!("| `{key}` | `{value}` |\n");
        }
    }
    out += &final_metrics(facts);
    out += "\n### Framework versions\n\n";
    out += &format!("- sdpo-rs: {}\n", env!("CARGO_PKG_VERSION"));
    out += &format!("- burn: {BURN_VERSION}\n");
    out += &format!("- tokenizers: {TOKENIZERS_VERSION}\n");
    if !facts.backend.is_empty() {
        out += &format!("- backend: {}\n", facts.backend);
    }
    out += "\n## Citations\n\n";
    out += &format!("Cite {method_name} as:\n\n```bibtex\n{citation}\n```\n");
    if config.sync_ref_model {
        out += &format!("\nCite TR-DPO as:\n\n```bibtex\n{TR_DPO_CITATION}\n```\n");
    }
    out
}

/// The keys the card lists (when set), in this order.
const HYPERPARAMETERS: &[&str] = &[
    "loss_type",
    "beta",
    "sdpo_threshold",
    "label_smoothing",
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "warmup_ratio",
    "weight_decay",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "num_train_epochs",
    "max_steps",
    "max_length",
    "max_prompt_length",
    "seed",
    "bf16",
    "gradient_checkpointing",
    "use_peft",
    "lora_r",
    "lora_alpha",
    "sync_ref_model",
    "ref_model_mixup_alpha",
    "ref_model_sync_steps",
];

/// The last training and evaluation values, and the best checkpoint when one was loaded.
fn final_metrics(facts: &CardFacts) -> String {
    let is_end = |r: &&MetricsRecord| r.values.contains_key("train_runtime");
    let is_eval = |r: &&MetricsRecord| r.values.keys().any(|k| k.starts_with("eval_"));
    let last_train = facts
        .records
        .iter()
        .rev()
        .find(|r| !is_end(r) && !is_eval(r));
    let last_eval = facts.records.iter().rev().find(is_eval);
    let mut out = String::new();
    if last_train.is_none() && last_eval.is_none() {
        return out;
    }
    out += "\n### Final metrics\n\n| metric | value | step |\n|---|---|---|\n";
    for record in [last_train, last_eval].into_iter().flatten() {
        for key in [
            "loss",
            "rewards/accuracies",
            "rewards/margins",
            "eval_loss",
            "eval_rewards/accuracies",
            "eval_rewards/margins",
        ] {
            if let Some(value) = record.values.get(key) {
                out += &format!("| `{key}` | {value:.6} | {} |\n", record.step);
            }
        }
    }
    if let Some((checkpoint, metric)) = &facts.best {
        out += &format!(
            "\nThe final model is the best checkpoint, `{checkpoint}` (metric {metric:.6}).\n"
        );
    }
    out
}

/// Writes the model card into `dir`.
pub fn write(dir: &Path, config: &TrainConfig, facts: &CardFacts) -> Result<(), TrainError> {
    let path = dir.join(MODEL_CARD);
    std::fs::write(&path, render(config, facts)).map_err(io("write", &path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_cache_snapshots_name_their_hub_id() {
        let snapshot =
            Path::new("/home/u/.cache/huggingface/hub/models--Qwen--Qwen3-0.6B/snapshots/abc123");
        assert_eq!(hub_id_of(snapshot).as_deref(), Some("Qwen/Qwen3-0.6B"));
        let dataset = Path::new("/c/hub/datasets--trl-lib--ultrafeedback_binarized/snapshots/x");
        assert_eq!(
            hub_id_of(dataset).as_deref(),
            Some("trl-lib/ultrafeedback_binarized")
        );
        assert_eq!(hub_id_of(Path::new("models/SmolLM2-135M-Instruct")), None);
    }

    #[test]
    fn pinned_versions_match_the_workspace_manifest() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let manifest = std::fs::read_to_string(&path).expect("the workspace Cargo.toml");
        for (name, version) in [("burn", BURN_VERSION), ("tokenizers", TOKENIZERS_VERSION)] {
            let pin = format!("{name} = {{ version = \"={version}\"");
            assert!(manifest.contains(&pin), "{} lacks `{pin}`", path.display());
        }
    }

    #[test]
    fn the_card_names_the_base_the_method_and_the_final_metrics() {
        let mut config = TrainConfig {
            model_name_or_path: "/c/hub/models--HuggingFaceTB--SmolLM2-135M-Instruct/snapshots/s"
                .into(),
            output_dir: "runs/smol-sdpo".into(),
            ..TrainConfig::default()
        };
        config.data.dataset_name =
            Some("/c/hub/datasets--trl-lib--ultrafeedback/snapshots/d".into());
        let record = |step, key: &str, value| MetricsRecord {
            step,
            epoch: 1.0,
            values: [(key.to_string(), value)].into_iter().collect(),
        };
        let facts = CardFacts {
            records: vec![record(3, "loss", 0.61), record(3, "eval_loss", 0.64)],
            backend: "flex (CPU)".into(),
            best: None,
        };
        let card = render(&config, &facts);
        for needle in [
            "base_model: \"HuggingFaceTB/SmolLM2-135M-Instruct\"",
            "datasets: \"trl-lib/ultrafeedback\"",
            "# Model Card for smol-sdpo",
            "https://huggingface.co/papers/2507.07725",
            "| `loss` | 0.610000 | 3 |",
            "| `eval_loss` | 0.640000 | 3 |",
            "| `sdpo_threshold` | `0.6` |",
            "- burn: 0.22.1",
        ] {
            assert!(card.contains(needle), "missing {needle:?} in\n{card}");
        }
    }
}
