//! Strict loading of Hugging Face safetensors checkpoints (single file or sharded).
//!
//! The headers are read first, by this module, so that a truncated file, an unsupported
//! dtype, and missing, unexpected or mis-shaped tensors are reported as typed errors naming
//! them, before burn-store reads any tensor data. burn-store then loads the data through its
//! PyTorch adapter (which transposes `Linear` weights and renames norm `weight`/`bias` to
//! `gamma`/`beta`), casting BF16/F16 to F32.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param};
use burn::store::burn_pack::Tensor as PackTensor;
use burn::store::{
    BurnToPyTorchAdapter, FloatCastAdapter, ModuleAdapter, ModuleContext, ModuleSnapshot,
    PyTorchToBurnAdapter, SafetensorsStore,
};
use burn::tensor::{Bool, DType, Int, Tensor};
use serde_json::Value;

use crate::error::{ModelError, ShapeMismatch};

/// Name of a single-file checkpoint.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Name of the shard index of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// burn-store's PyTorch layout conversion, extended to this crate's [`LoraLinear`]: its
/// `weight` is an `nn.Linear` weight (`[out, in]` on disk, `[in, out]` in memory) although the
/// struct is not burn's `Linear`, which is all burn-store's adapters recognise.
///
/// [`LoraLinear`]: crate::lora::LoraLinear
#[derive(Debug, Clone, Copy)]
pub struct HfLayoutAdapter {
    to_burn: bool,
}

impl HfLayoutAdapter {
    /// Reading a Hugging Face checkpoint into a module.
    pub fn to_burn() -> Self {
        Self { to_burn: true }
    }

    /// Writing a module as a Hugging Face checkpoint.
    pub fn to_pytorch() -> Self {
        Self { to_burn: false }
    }
}

const LORA_LINEAR: &str = "Struct:LoraLinear";

impl ModuleAdapter for HfLayoutAdapter {
    fn adapt(&self, tensor: PackTensor, ctx: ModuleContext<'_>) -> PackTensor {
        let as_linear = ["Struct:Linear".to_string()];
        let ctx = if ctx.module_type() == Some(LORA_LINEAR) {
            ModuleContext::new(&as_linear)
        } else {
            ctx
        };
        if self.to_burn {
            PyTorchToBurnAdapter.adapt(tensor, ctx)
        } else {
            BurnToPyTorchAdapter.adapt(tensor, ctx)
        }
    }

    fn get_alternative_param_name(&self, param_name: &str, module_type: &str) -> Option<String> {
        if self.to_burn {
            PyTorchToBurnAdapter.get_alternative_param_name(param_name, module_type)
        } else {
            BurnToPyTorchAdapter.get_alternative_param_name(param_name, module_type)
        }
    }

    fn clone_box(&self) -> Box<dyn ModuleAdapter> {
        Box::new(*self)
    }
}

/// Dtype and shape of one stored tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTensor {
    /// safetensors dtype string (`F32`, `BF16`, ...).
    pub dtype: String,
    /// Shape as stored.
    pub shape: Vec<usize>,
    /// Offset of its first byte in the file.
    pub data_start: u64,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The safetensors files of a checkpoint directory: `model.safetensors`, or every shard named
/// in `model.safetensors.index.json`.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let single = dir.join(WEIGHTS_FILE);
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join(INDEX_FILE);
    if !index.is_file() {
        return Err(ModelError::NoWeights {
            dir: dir.to_path_buf(),
        });
    }
    let text = crate::error::read_text(&index)?;
    let json: Value = serde_json::from_str(&text).map_err(|source| ModelError::Json {
        path: index.clone(),
        source,
    })?;
    let bad = |reason: &str| ModelError::BadSafetensors {
        path: index.clone(),
        reason: reason.to_string(),
    };
    let map = json
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("no `weight_map` object"))?;
    let mut shards = BTreeSet::new();
    for file in map.values() {
        let name = file
            .as_str()
            .ok_or_else(|| bad("a `weight_map` value is not a file name"))?;
        if name.contains('/') || name.contains('\\') || name == ".." {
            return Err(bad("a shard name points outside the checkpoint directory"));
        }
        shards.insert(name.to_string());
    }
    Ok(shards.into_iter().map(|s| dir.join(s)).collect())
}

/// Reads the header of one safetensors file and checks that the file is long enough for it.
pub fn read_header(path: &Path) -> Result<BTreeMap<String, StoredTensor>, ModelError> {
    let mut file = std::fs::File::open(path).map_err(io_error(path))?;
    let actual = file.metadata().map_err(io_error(path))?.len();
    let truncated = |expected: u64| ModelError::Truncated {
        path: path.to_path_buf(),
        expected,
        actual,
    };
    let bad = |reason: String| ModelError::BadSafetensors {
        path: path.to_path_buf(),
        reason,
    };
    if actual < 8 {
        return Err(truncated(8));
    }
    let mut len_bytes = [0u8; 8];
    file.read_exact(&mut len_bytes).map_err(io_error(path))?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > 100_000_000 {
        return Err(bad(format!("header length {header_len} is implausible")));
    }
    if 8 + header_len > actual {
        return Err(truncated(8 + header_len));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(io_error(path))?;
    let json: BTreeMap<String, Value> =
        serde_json::from_slice(&header).map_err(|e| bad(format!("header is not JSON: {e}")))?;

    let mut tensors = BTreeMap::new();
    let mut data_end = 0u64;
    for (name, entry) in json {
        if name == "__metadata__" {
            continue;
        }
        let dtype = entry.get("dtype").and_then(Value::as_str);
        let shape: Option<Vec<usize>> = entry.get("shape").and_then(|s| {
            s.as_array()?
                .iter()
                .map(|d| d.as_u64().map(|d| d as usize))
                .collect()
        });
        let offsets: Option<Vec<u64>> = entry
            .get("data_offsets")
            .and_then(Value::as_array)
            .and_then(|o| o.iter().map(Value::as_u64).collect());
        let (Some(dtype), Some(shape), Some([begin, end])) = (
            dtype,
            shape,
            offsets
                .as_deref()
                .and_then(|o| <[u64; 2]>::try_from(o).ok()),
        ) else {
            return Err(bad(format!("malformed header entry for `{name}`")));
        };
        if begin > end {
            return Err(bad(format!(
                "`{name}`: data_offsets [{begin}, {end}] run backwards"
            )));
        }
        // The byte size the dtype and shape imply must be the span of the offsets; a corrupted
        // shape or offset is refused here, before any allocation (checked arithmetic: a huge
        // value must not overflow into a small one).
        let element_bytes = match dtype {
            "F64" | "I64" | "U64" => Some(8u64),
            "F32" | "I32" | "U32" => Some(4),
            "BF16" | "F16" | "I16" | "U16" => Some(2),
            "I8" | "U8" | "BOOL" | "F8_E4M3" | "F8_E5M2" => Some(1),
            _ => None,
        };
        if let Some(element_bytes) = element_bytes {
            let bytes = shape
                .iter()
                .try_fold(element_bytes, |acc, &d| acc.checked_mul(d as u64));
            if bytes != Some(end - begin) {
                return Err(bad(format!(
                    "`{name}`: shape {shape:?} of {dtype} does not fill data_offsets [{begin}, {end}]"
                )));
            }
        }
        data_end = data_end.max(end);
        // 8 + header_len + end must be a position in the file (checked below); an offset near
        // u64::MAX is refused here, before the sum wraps.
        let data_start = 8u64
            .checked_add(header_len)
            .and_then(|n| n.checked_add(begin))
            .ok_or_else(|| truncated(u64::MAX))?;
        tensors.insert(
            name,
            StoredTensor {
                dtype: dtype.to_string(),
                shape,
                data_start,
            },
        );
    }
    let needed = 8u64
        .checked_add(header_len)
        .and_then(|n| n.checked_add(data_end))
        .unwrap_or(u64::MAX);
    if needed > actual {
        return Err(truncated(needed));
    }
    for (name, t) in &tensors {
        if !matches!(t.dtype.as_str(), "F32" | "BF16" | "F16") {
            return Err(ModelError::UnsupportedDtype {
                path: path.to_path_buf(),
                name: name.clone(),
                dtype: t.dtype.clone(),
            });
        }
    }
    Ok(tensors)
}

/// Non-parameter buffers that some exporters write and transformers ignores on load.
fn is_ignored_buffer(name: &str) -> bool {
    name.ends_with(".attn.masked_bias")
        || name.ends_with(".attn.bias") && !name.contains("c_attn")
        || name.ends_with("rotary_emb.inv_freq")
}

/// The tensors a module expects, under their Hugging Face names and PyTorch shapes.
///
/// Reads only each parameter's shape: a lazy parameter (a module built to be loaded) stays
/// lazy, so listing a large model's tensors allocates none of them (burn-store's `collect`
/// would materialise every one).
pub fn expected_tensors<M: Module>(module: &M) -> BTreeMap<String, Vec<usize>> {
    param_slots(module)
        .into_iter()
        .map(|slot| (slot.name, slot.shape))
        .collect()
}

/// Where a checkpoint tensor goes in a module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParamSlot {
    /// Hugging Face name.
    pub name: String,
    /// Shape as stored (PyTorch's layout).
    pub shape: Vec<usize>,
    /// The parameter's path in the module.
    pub path: String,
    /// Stored transposed (`nn.Linear` weights: `[out, in]` on disk, `[in, out]` in memory).
    pub transposed: bool,
}

/// Every parameter of `module` with its checkpoint name, read from shapes only (lazy
/// parameters stay lazy).
pub(crate) fn param_slots<M: Module>(module: &M) -> Vec<ParamSlot> {
    let mut lister = TensorLister::default();
    module.visit(&mut lister);
    lister.slots
}

/// Walks a module like burn-store's collector, but describes each tensor from its lazy shape,
/// with a byte source that is never read, through the layout adapter.
#[derive(Default)]
struct TensorLister {
    path: Vec<String>,
    containers: Vec<String>,
    slots: Vec<ParamSlot>,
}

impl TensorLister {
    fn adapt(&self, dtype: DType, shape: burn::tensor::Shape) -> PackTensor {
        let bytes = shape.num_elements() * dtype.size();
        let described =
            PackTensor::deferred(self.path.join("."), dtype, shape, None, bytes, || {
                unreachable!("the tensor list reads no data")
            });
        HfLayoutAdapter::to_pytorch().adapt(described, ModuleContext::new(&self.containers))
    }

    fn add(&mut self, dtype: DType, shape: burn::tensor::Shape) {
        // Whether the adapter transposes depends on the module and the parameter only: a
        // [2, 3] probe at the same place says it whatever the real shape (a square one too).
        let rank = shape.num_dims();
        let transposed = rank == 2
            && self
                .adapt(dtype, burn::tensor::Shape::new([2, 3]))
                .shape
                .to_vec()
                == [3, 2];
        let adapted = self.adapt(dtype, shape);
        self.slots.push(ParamSlot {
            name: adapted.name,
            shape: adapted.shape.to_vec(),
            path: self.path.join("."),
            transposed,
        });
    }
}

impl ModuleVisitor for TensorLister {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.containers.push(container_type.to_string());
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.containers.pop();
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.add(DType::F32, param.lazy_shape());
    }

    fn visit_int<const D: usize>(&mut self, param: &Param<Tensor<D, Int>>) {
        self.add(DType::I64, param.lazy_shape());
    }

    fn visit_bool<const D: usize>(&mut self, param: &Param<Tensor<D, Bool>>) {
        self.add(DType::U8, param.lazy_shape());
    }
}

/// Compares a module's expected tensors with those stored, in the order missing → unexpected
/// → wrong shape. `tied_head` names a head that the file may carry although the model ties it.
pub fn check_tensors(
    dir: &Path,
    expected: &BTreeMap<String, Vec<usize>>,
    stored: &BTreeMap<String, StoredTensor>,
    tied_head: Option<&str>,
) -> Result<(), ModelError> {
    let missing: Vec<String> = expected
        .keys()
        .filter(|name| !stored.contains_key(*name))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(ModelError::MissingTensors {
            dir: dir.to_path_buf(),
            names: missing,
        });
    }
    let unexpected: Vec<String> = stored
        .keys()
        .filter(|name| !expected.contains_key(*name))
        .filter(|name| !is_ignored_buffer(name) && Some(name.as_str()) != tied_head)
        .cloned()
        .collect();
    if !unexpected.is_empty() {
        return Err(ModelError::UnexpectedTensors {
            dir: dir.to_path_buf(),
            names: unexpected,
        });
    }
    let mismatches: Vec<ShapeMismatch> = expected
        .iter()
        .filter_map(|(name, shape)| {
            let found = &stored.get(name)?.shape;
            (found != shape).then(|| ShapeMismatch {
                name: name.clone(),
                expected: shape.clone(),
                found: found.clone(),
            })
        })
        .collect();
    if !mismatches.is_empty() {
        return Err(ModelError::WrongShapes {
            dir: dir.to_path_buf(),
            mismatches,
        });
    }
    Ok(())
}

/// Loads the (already checked) files into `module`, converting to F32.
pub fn load_files<M: ModuleSnapshot>(module: &mut M, files: &[PathBuf]) -> Result<(), ModelError> {
    for path in files {
        let adapter = HfLayoutAdapter::to_burn().chain(FloatCastAdapter::to(DType::F32));
        let mut store = SafetensorsStore::from_file(path.clone())
            .with_from_adapter(adapter)
            .allow_partial(true)
            .validate(false);
        let result = module
            .load_from(&mut store)
            .map_err(|e| ModelError::Store {
                path: path.clone(),
                message: e.to_string(),
            })?;
        if !result.errors.is_empty() {
            return Err(ModelError::Store {
                path: path.clone(),
                message: result
                    .errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            });
        }
    }
    Ok(())
}

/// Reads every header of a checkpoint directory, merged.
pub fn read_headers(files: &[PathBuf]) -> Result<BTreeMap<String, StoredTensor>, ModelError> {
    let mut all = BTreeMap::new();
    for file in files {
        all.extend(read_header(file)?);
    }
    Ok(all)
}
