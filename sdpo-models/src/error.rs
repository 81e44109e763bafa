//! The crate's one error type: every failure names the file, key or tensor that caused it.

use std::path::PathBuf;

/// A tensor whose shape in the checkpoint differs from the one the config implies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeMismatch {
    /// Hugging Face name of the tensor, e.g. `model.layers.0.self_attn.q_proj.weight`.
    pub name: String,
    /// Shape the model built from `config.json` expects (PyTorch layout).
    pub expected: Vec<usize>,
    /// Shape stored in the checkpoint.
    pub found: Vec<usize>,
}

impl std::fmt::Display for ShapeMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (expected {:?}, found {:?})",
            self.name, self.expected, self.found
        )
    }
}

/// Everything that can go wrong while reading, building or writing a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// `config.json` (or the shard index) is not valid JSON or has a value of the wrong type.
    #[error("invalid JSON in {path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error (line and column included).
        #[source]
        source: serde_json::Error,
    },

    /// A key the architecture needs is absent from `config.json`.
    #[error("config.json has no `{key}`, which {model_type} models require")]
    MissingConfigKey {
        /// The `model_type` being resolved.
        model_type: String,
        /// The missing key.
        key: &'static str,
    },

    /// A text file (a config, an index) is not UTF-8.
    #[error("{}: not UTF-8 text: invalid byte at offset {offset}", path.display())]
    NotText {
        /// The file.
        path: std::path::PathBuf,
        /// The offset of the first byte that is not UTF-8.
        offset: usize,
    },

    /// An error about the contents of a file whose own message does not name it (a config
    /// value, an adapter setting): the file, then the error.
    #[error("{}: {source}", path.display())]
    InFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong in it.
        #[source]
        source: Box<ModelError>,
    },

    /// A config value is out of range or inconsistent with another one.
    #[error("invalid config value `{key}`: {reason}")]
    InvalidConfig {
        /// The offending key.
        key: String,
        /// Why it is rejected.
        reason: String,
    },

    /// `model_type` names an architecture this crate does not implement.
    #[error("unsupported model_type `{model_type}` (supported: {})", crate::families::supported_model_types().join(", "))]
    UnsupportedModelType {
        /// The value found in `config.json`.
        model_type: String,
    },

    /// A config option this crate does not implement is switched on.
    #[error("unsupported config option `{option}` = {value} for {model_type}")]
    UnsupportedOption {
        /// The `model_type`.
        model_type: String,
        /// The key, e.g. `rope_scaling.rope_type` or `use_sliding_window`.
        option: String,
        /// The value found (as JSON).
        value: String,
    },

    /// The directory has neither `model.safetensors` nor `model.safetensors.index.json`.
    #[error("no model.safetensors or model.safetensors.index.json in {dir}")]
    NoWeights {
        /// The checkpoint directory.
        dir: PathBuf,
    },

    /// A safetensors file is shorter than its header says (an interrupted download or copy).
    #[error("{path} is truncated: its header needs {expected} bytes, the file has {actual}")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Bytes the header describes.
        expected: u64,
        /// Bytes on disk.
        actual: u64,
    },

    /// A safetensors file whose header cannot be parsed.
    #[error("{path} is not a valid safetensors file: {reason}")]
    BadSafetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A stored tensor has a dtype other than F32, BF16 or F16.
    #[error("tensor `{name}` in {path} has dtype {dtype}; only F32, BF16 and F16 are supported")]
    UnsupportedDtype {
        /// The file.
        path: PathBuf,
        /// The tensor.
        name: String,
        /// The dtype string from the header.
        dtype: String,
    },

    /// The checkpoint lacks tensors that the model needs.
    #[error("checkpoint {dir} is missing {} tensor(s): {}", names.len(), names.join(", "))]
    MissingTensors {
        /// The checkpoint directory.
        dir: PathBuf,
        /// Hugging Face names of the missing tensors.
        names: Vec<String>,
    },

    /// The checkpoint has tensors that the model does not know.
    #[error("checkpoint {dir} has {} unexpected tensor(s): {}", names.len(), names.join(", "))]
    UnexpectedTensors {
        /// The checkpoint directory.
        dir: PathBuf,
        /// Hugging Face names of the extra tensors.
        names: Vec<String>,
    },

    /// Tensors whose stored shape does not match the config.
    #[error(
        "checkpoint {dir} has {} tensor(s) of the wrong shape: {}",
        mismatches.len(),
        mismatches.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    )]
    WrongShapes {
        /// The checkpoint directory.
        dir: PathBuf,
        /// Each offending tensor with both shapes.
        mismatches: Vec<ShapeMismatch>,
    },

    /// burn-store failed while reading or writing tensors.
    #[error("tensor store error for {path}: {message}")]
    Store {
        /// The file.
        path: PathBuf,
        /// burn-store's message.
        message: String,
    },

    /// Input tensors of the wrong shape or length for this model.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// A LoRA setting is out of range or inconsistent.
    #[error("invalid LoRA setting `{key}`: {reason}")]
    InvalidLoraConfig {
        /// The setting (PEFT's name).
        key: String,
        /// Why it is rejected.
        reason: String,
    },

    /// A LoRA / PEFT option this crate does not implement (DoRA, quantized bases, ...).
    #[error("unsupported LoRA option `{option}` = {value}: {reason}")]
    UnsupportedLora {
        /// The option (and the file it came from, when read from one).
        option: String,
        /// The value found.
        value: String,
        /// What is not supported, and what to do instead.
        reason: String,
    },

    /// `target_modules` / `modules_to_save` entries that match none of the model's linear
    /// layers.
    #[error(
        "`{key}` entries {unknown:?} match no linear layer of this model; its linear layers are: {}",
        available.join(", ")
    )]
    UnknownTargetModules {
        /// `target_modules` or `modules_to_save`.
        key: String,
        /// The entries that matched nothing.
        unknown: Vec<String>,
        /// The model's linear layer kinds (`q_proj`, `k_proj`, ...).
        available: Vec<String>,
    },

    /// The adapter's base model is not a local directory and no base was given.
    #[error(
        "the base model of adapter {adapter_dir} is {}, which is not a local directory; pass the base model directory explicitly",
        base_model_name_or_path.as_deref().map_or("not recorded".to_string(), |b| format!("`{b}`"))
    )]
    AdapterBaseNotLocal {
        /// The adapter directory.
        adapter_dir: PathBuf,
        /// Its `base_model_name_or_path` (a Hub id, a missing path, or absent).
        base_model_name_or_path: Option<String>,
    },

    /// An adapter operation on a model without an adapter.
    #[error("the model has no LoRA adapter attached")]
    NoAdapter,

    /// Attaching or loading an adapter onto a model that already has one.
    #[error(
        "the model already has a LoRA adapter ({layers} layers); merge it or start from the base"
    )]
    AdapterAlreadyAttached {
        /// Layers the existing adapter touches.
        layers: usize,
    },

    /// `save_pretrained` on a model with an adapter attached, which would drop the adapter.
    #[error(
        "the model has a LoRA adapter attached: save it with save_adapter, or merge_adapters first to save a full checkpoint"
    )]
    AdapterNotMerged,

    /// A 4-bit weight whose parts do not fit its shape (codes, block scales, nested scales)
    /// or hold values out of range.
    #[error("4-bit tensor `{tensor}`: {reason}")]
    InvalidQuantizedTensor {
        /// The tensor's name in its file (or the layer's module name).
        tensor: String,
        /// What is wrong.
        reason: String,
    },

    /// Tensor values could not be read back from the device.
    #[error("cannot read {what} back from the device: {message}")]
    DeviceRead {
        /// The tensor.
        what: String,
        /// The backend's message.
        message: String,
    },

    /// `save_pretrained` of a model whose base is held in 4 bits: its float weights are gone.
    #[error(
        "the model's linear layers are held in 4 bits (load_in_4bit); save the adapter, or merge it into the float base loaded again from its checkpoint"
    )]
    QuantizedBase,
}

/// Reads a text file: [`ModelError::Io`] when it cannot be read, [`ModelError::NotText`] with
/// the offset of the first bad byte when it is not UTF-8.
pub(crate) fn read_text(path: &std::path::Path) -> Result<String, ModelError> {
    let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|e| ModelError::NotText {
        path: path.to_path_buf(),
        offset: e.utf8_error().valid_up_to(),
    })
}

/// `error` about the contents of `path`, naming the file when its own message does not.
pub(crate) fn in_file(path: &std::path::Path, error: ModelError) -> ModelError {
    if error.to_string().contains(&path.display().to_string()) {
        error
    } else {
        ModelError::InFile {
            path: path.to_path_buf(),
            source: Box::new(error),
        }
    }
}

impl ModelError {
    /// The error itself, without the [`ModelError::InFile`] wrappers that name its file.
    pub fn without_file(self) -> ModelError {
        match self {
            ModelError::InFile { source, .. } => source.without_file(),
            other => other,
        }
    }
}
