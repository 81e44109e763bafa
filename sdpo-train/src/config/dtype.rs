//! The dtypes a run keeps weights in: `dtype` (TRL's `ModelConfig.dtype`, the policy's base)
//! and `ref_dtype` (a separate frozen reference).

use std::path::Path;

use burn::tensor::FloatDType;
use serde::{Deserialize, Serialize};

use crate::error::TrainError;

/// The dtype a frozen reference model keeps its matrices in (`ref_dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RefDtype {
    /// float32, as loaded.
    Float32,
    /// bfloat16: half the memory, rounded weights.
    Bfloat16,
    /// float16: half the memory, rounded weights (range up to 65504).
    Float16,
}

impl RefDtype {
    /// The burn dtype.
    pub fn dtype(self) -> burn::tensor::FloatDType {
        use burn::tensor::FloatDType;
        match self {
            Self::Float32 => FloatDType::F32,
            Self::Bfloat16 => FloatDType::BF16,
            Self::Float16 => FloatDType::F16,
        }
    }

    /// The name in a configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Float32 => "float32",
            Self::Bfloat16 => "bfloat16",
            Self::Float16 => "float16",
        }
    }
}

/// The dtype the model is loaded in (`dtype`, TRL's `ModelConfig.dtype`): `"float32"` (TRL's
/// default), `"bfloat16"`, `"float16"`, or `"auto"` (the checkpoint's own, from its
/// `config.json`).
///
/// The model's matrices (embeddings, output head, float linear weights) are held in this dtype.
/// With `use_peft` that is the frozen base, the adapters stay float32 (PEFT's
/// `autocast_adapter_dtype`); without it the trained matrices, their gradients and their AdamW
/// moments are in this dtype, as transformers trains a model loaded in it (norm weights and
/// biases stay float32). A backend without the dtype trains float32 weights with a warning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelDtype {
    /// float32 (TRL's default).
    #[default]
    Float32,
    /// bfloat16.
    Bfloat16,
    /// float16.
    Float16,
    /// The dtype recorded in the checkpoint's `config.json` (`dtype`, or transformers 4's
    /// `torch_dtype`); float32 when it records none.
    Auto,
}

impl ModelDtype {
    /// The name in a configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Float32 => "float32",
            Self::Bfloat16 => "bfloat16",
            Self::Float16 => "float16",
            Self::Auto => "auto",
        }
    }

    /// The storage dtype for the model in `model_dir`: `None` for float32, `"auto"` read from
    /// its `config.json`. Errors name `dtype` and the file.
    pub fn resolve(self, model_dir: &Path) -> Result<Option<FloatDType>, TrainError> {
        let named = |name: &str, source: &str| -> Result<Option<FloatDType>, TrainError> {
            match name {
                "float32" => Ok(None),
                "bfloat16" => Ok(Some(FloatDType::BF16)),
                "float16" => Ok(Some(FloatDType::F16)),
                other => Err(TrainError::Config {
                    key: "dtype".into(),
                    reason: format!(
                        "{source} gives `{other}`; expected float32, bfloat16 or float16"
                    ),
                }),
            }
        };
        match self {
            Self::Auto => {
                let path = model_dir.join("config.json");
                let recorded = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                    .and_then(|c| {
                        ["dtype", "torch_dtype"]
                            .iter()
                            .find_map(|k| c.get(*k).and_then(|v| v.as_str()).map(str::to_string))
                    });
                match recorded {
                    Some(name) => named(&name, &format!("\"auto\": {}", path.display())),
                    None => Ok(None),
                }
            }
            other => named(other.as_str(), "the configuration"),
        }
    }
}
