//! A model whose weights stay on disk: one piece (the embeddings, one decoder layer, or the
//! final norm and output head) is read from its memory-mapped safetensors at a time, used, and
//! released, so that running a model needs one piece's weights in memory whatever its size.
//!
//! [`StreamedLm`] holds the model's structure with every parameter lazy (nothing allocated) and
//! an index of where each tensor is stored. [`StreamedLm::load`] reads one [`Piece`]'s tensors
//! into it after releasing the piece loaded before: each tensor by positioned reads of its bytes
//! in blocks, converted to float32 in the module's layout as it is read (the float32 values,
//! exactly those [`CausalLm::from_pretrained`] holds, plus one block are in memory; no memory
//! map, whose pages would count as the process's), then stored as [`WeightStorage`] says; the forward pieces
//! of [`CausalLm`] (see [`crate::StackContext`]) then run on [`StreamedLm::model`] as on a model
//! loaded whole, with the same results bit for bit: the same weights meet the same operations.
//! Which piece a forward step needs is the caller's business (the embedding for
//! [`CausalLm::embed`], layer `l` for [`CausalLm::layer_forward`] of `l`, the head for
//! [`CausalLm::final_norm`] and [`CausalLm::lm_head`]); a tensor of another piece reads as zeros.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::*;
use burn::tensor::FloatDType;

use crate::CausalLm;
use crate::checkpoint::{ParamSlot, StoredTensor, check_tensors, read_header, weight_files};
use crate::config::ModelConfig;
use crate::error::ModelError;
use crate::init::Init;
use crate::precision::{MatmulPrecision, MatrixCast};
use crate::tensor_read::read_f32;

/// A part of a model that [`StreamedLm`] holds in memory at one time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Piece {
    /// The input embeddings (token, and GPT-2's positions).
    Embedding,
    /// Decoder layer `l`.
    Layer(usize),
    /// The final norm and the output head (with tied embeddings: the token embedding).
    Head,
}

/// How the loaded weights are held, as the in-memory reference holds them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WeightStorage {
    /// Float32 (the default).
    #[default]
    F32,
    /// Every matrix in this dtype, vectors in float32 ([`crate::store_matrices_as`];
    /// `ref_dtype`).
    Matrices(FloatDType),
    /// The matrices that only enter products (decoder layers, an untied head) in this dtype
    /// ([`crate::store_product_weights_as`]).
    ProductWeights(FloatDType),
}

/// A causal LM read from its checkpoint one [`Piece`] at a time.
#[derive(Debug)]
pub struct StreamedLm {
    model: CausalLm,
    dir: PathBuf,
    /// The module prefixes (`model.layers.3.self_attn.q_proj.`) of each piece's tensors.
    prefixes: BTreeMap<Piece, BTreeSet<String>>,
    /// Each piece's tensors: where each goes and where it is stored.
    tensors: BTreeMap<Piece, Vec<(ParamSlot, PathBuf, StoredTensor)>>,
    storage: WeightStorage,
    loaded: Option<Piece>,
    device: Device,
}

impl StreamedLm {
    /// Opens a Hugging Face checkpoint directory without reading any weight: `config.json` and
    /// the safetensors headers, checked as strictly as [`CausalLm::from_pretrained`] checks
    /// them (missing, unexpected and mis-shaped tensors are errors naming them).
    pub fn open(dir: impl AsRef<Path>, device: &Device) -> Result<Self, ModelError> {
        let dir = dir.as_ref();
        let config = ModelConfig::from_pretrained_dir(dir)?;
        let files = weight_files(dir)?;
        let mut stored: BTreeMap<String, (PathBuf, StoredTensor)> = BTreeMap::new();
        for file in &files {
            for (name, tensor) in read_header(file)? {
                stored.insert(name, (file.clone(), tensor));
            }
        }
        let model = CausalLm::build(&config, &mut Init::for_loading(device));
        let tied_head = config.tie_word_embeddings.then_some("lm_head.weight");
        let slots = model.param_slots();
        let expected = slots
            .iter()
            .map(|s| (s.name.clone(), s.shape.clone()))
            .collect();
        let headers = stored
            .iter()
            .map(|(name, (_, t))| (name.clone(), t.clone()))
            .collect();
        check_tensors(dir, &expected, &headers, tied_head)?;
        let mut prefixes: BTreeMap<Piece, BTreeSet<String>> = BTreeMap::new();
        let mut tensors: BTreeMap<Piece, Vec<_>> = BTreeMap::new();
        for slot in slots {
            let Some((file, tensor)) = stored.get(&slot.name) else {
                continue; // check_tensors named every missing tensor
            };
            for piece in pieces_of(&slot.name, config.tie_word_embeddings) {
                prefixes
                    .entry(piece)
                    .or_default()
                    .insert(module_prefix(&slot.name));
                tensors.entry(piece).or_default().push((
                    slot.clone(),
                    file.clone(),
                    tensor.clone(),
                ));
            }
        }
        Ok(Self {
            model,
            dir: dir.to_path_buf(),
            prefixes,
            tensors,
            storage: WeightStorage::F32,
            loaded: None,
            device: device.clone(),
        })
    }

    /// The same model with its matrix products in `precision` (see
    /// [`CausalLm::with_matmul_precision`]).
    pub fn with_matmul_precision(mut self, precision: MatmulPrecision) -> Self {
        self.model = self.model.with_matmul_precision(precision);
        self
    }

    /// The same model holding its loaded weights as `storage` says.
    pub fn with_weight_storage(mut self, storage: WeightStorage) -> Self {
        self.storage = storage;
        self
    }

    /// The checkpoint directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The resolved configuration.
    pub fn config(&self) -> &ModelConfig {
        self.model.config()
    }

    /// The model with the piece of the last [`StreamedLm::load`] in memory (every other
    /// parameter is lazy: reading it gives zeros).
    pub fn model(&self) -> &CausalLm {
        &self.model
    }

    /// The piece in memory, if any.
    pub fn loaded(&self) -> Option<Piece> {
        self.loaded
    }

    /// The module prefixes of `piece`'s tensors (`model.layers.3.mlp.up_proj.`), in order.
    pub fn prefixes(&self, piece: Piece) -> Vec<String> {
        self.prefixes
            .get(&piece)
            .map(|p| p.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Releases the piece in memory and reads `piece`'s tensors from the checkpoint; returns
    /// the model to run it on. Loading the piece already in memory does nothing.
    pub fn load(&mut self, piece: Piece) -> Result<&CausalLm, ModelError> {
        if self.loaded == Some(piece) {
            return Ok(&self.model);
        }
        self.release();
        self.read(piece)?;
        self.loaded = Some(piece);
        Ok(&self.model)
    }

    /// Every piece the checkpoint has, in model order (embeddings, layers, head).
    pub(crate) fn pieces(&self) -> Vec<Piece> {
        self.tensors.keys().copied().collect()
    }

    /// Reads `piece`'s tensors into the model, keeping what is in memory already (a model
    /// built piece by piece, e.g. quantized layer by layer).
    pub(crate) fn read(&mut self, piece: Piece) -> Result<(), ModelError> {
        let Some(entries) = self.tensors.get(&piece) else {
            return Err(ModelError::InvalidInput(format!(
                "`{}` has no {piece:?} (the model has {} layers)",
                self.dir.display(),
                self.model.num_layers()
            )));
        };
        let mut values = BTreeMap::new();
        for (slot, file, stored) in entries {
            let data = read_f32(file, &slot.name, stored, slot.transposed)?;
            let shape = if slot.transposed {
                vec![stored.shape[1], stored.shape[0]]
            } else {
                stored.shape.clone()
            };
            values.insert(slot.path.clone(), (slot.name.clone(), data, shape));
        }
        // Each tensor becomes its parameter's value without a copy (burn-store's applier
        // copied the largest ones once more on the way).
        let mut placer = Placer {
            path: Vec::new(),
            values,
            device: self.device.clone(),
            wrong_shapes: Vec::new(),
        };
        self.model = self.take_model().map(&mut placer);
        let unplaced: Vec<String> = placer.values.into_values().map(|(name, ..)| name).collect();
        if !unplaced.is_empty() || !placer.wrong_shapes.is_empty() {
            return Err(ModelError::Store {
                path: self.dir.clone(),
                message: format!(
                    "{piece:?}: tensors without a parameter {unplaced:?}, of the wrong shape {:?}",
                    placer.wrong_shapes
                ),
            });
        }
        let tied = self.model.config().tie_word_embeddings;
        let model = self.take_model();
        self.model = match self.storage {
            WeightStorage::F32 => model,
            WeightStorage::Matrices(dtype) => store_matrices_as_loaded(model, dtype),
            WeightStorage::ProductWeights(dtype) => match piece {
                Piece::Layer(_) => store_matrices_as_loaded(model, dtype),
                Piece::Head if !tied => store_matrices_as_loaded(model, dtype),
                _ => model,
            },
        };
        Ok(())
    }

    /// The model as read so far.
    pub(crate) fn model_mut(&mut self) -> &mut CausalLm {
        &mut self.model
    }

    /// The model as read so far, taken out.
    pub(crate) fn into_model(self) -> CausalLm {
        self.model
    }

    /// Frees the piece in memory: every parameter is lazy again.
    pub fn release(&mut self) {
        if self.loaded.take().is_some() {
            let device = self.device.clone();
            self.model = self.take_model().map(&mut Release { device });
        }
    }

    /// The model, leaving an unloaded copy of its structure (nothing allocated) in its place.
    fn take_model(&mut self) -> CausalLm {
        let placeholder =
            CausalLm::build(self.model.config(), &mut Init::for_loading(&self.device));
        std::mem::replace(&mut self.model, placeholder)
    }
}

/// `name` without its last segment, the dot kept: `model.norm.weight` → `model.norm.`.
fn module_prefix(name: &str) -> String {
    match name.rfind('.') {
        Some(i) => name[..=i].to_string(),
        None => String::new(),
    }
}

/// The pieces a tensor (Hugging Face name) belongs to: its decoder layer (`model.layers.N.`,
/// GPT-2's `transformer.h.N.`), the embeddings (`embed_tokens`, `wte`, `wpe`; the token
/// embedding also to the head when tied), or the head (the final norm, `lm_head`).
fn pieces_of(name: &str, tied: bool) -> Vec<Piece> {
    let segments: Vec<&str> = name.split('.').collect();
    for pair in segments.windows(2) {
        if matches!(pair[0], "layers" | "h")
            && let Ok(layer) = pair[1].parse::<usize>()
        {
            return vec![Piece::Layer(layer)];
        }
    }
    let module = segments.iter().rev().nth(1).copied().unwrap_or_default();
    match module {
        "embed_tokens" | "wte" if tied => vec![Piece::Embedding, Piece::Head],
        "embed_tokens" | "wte" | "wpe" => vec![Piece::Embedding],
        _ => vec![Piece::Head],
    }
}

/// [`crate::store_matrices_as`] for the parameters in memory only (a lazy one stays lazy).
fn store_matrices_as_loaded(model: CausalLm, dtype: FloatDType) -> CausalLm {
    model.map(&mut LoadedOnly(MatrixCast { dtype }))
}

/// Applies the inner mapper to initialized parameters only.
struct LoadedOnly<M>(M);

impl<M: ModuleMapper> ModuleMapper for LoadedOnly<M> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if param.is_initialized() {
            self.0.map_float(param)
        } else {
            param
        }
    }
}

/// Gives the parameters at the paths of `values` those values (float32, the module's layout).
struct Placer {
    path: Vec<String>,
    /// Module path → (checkpoint name, values, shape).
    values: BTreeMap<String, (String, Vec<f32>, Vec<usize>)>,
    device: Device,
    wrong_shapes: Vec<String>,
}

/// [`CausalLm`]'s variants: the family's module paths (those of the checkpoint) start below.
const FAMILY_ENUM: &str = "Enum:CausalLm";

impl ModuleMapper for Placer {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        if container_type != FAMILY_ENUM {
            self.path.push(name.to_string());
        }
    }

    fn exit_module(&mut self, _name: &str, container_type: &str) {
        if container_type != FAMILY_ENUM {
            self.path.pop();
        }
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some((name, data, shape)) = self.values.remove(&self.path.join(".")) else {
            return param;
        };
        if param.lazy_shape().to_vec() != shape {
            self.wrong_shapes.push(name);
            return param;
        }
        let tensor = Tensor::from_data(TensorData::new(data, shape), &self.device);
        Param::initialized(param.id, tensor)
    }
}

/// Replaces every parameter in memory with a lazy one of the same id and shape (zeros if read).
struct Release {
    device: Device,
}

impl ModuleMapper for Release {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if !param.is_initialized() {
            return param;
        }
        let shape = param.lazy_shape();
        let id = param.id;
        drop(param);
        let zeros_shape = shape.clone();
        Param::uninitialized(
            id,
            move |device: &Device, _| Tensor::zeros(zeros_shape, device),
            self.device.clone(),
            false,
            shape,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tensor_name_belongs_to_its_piece() {
        assert_eq!(
            pieces_of("model.layers.12.self_attn.q_proj.weight", false),
            [Piece::Layer(12)]
        );
        assert_eq!(
            pieces_of("transformer.h.3.attn.c_attn.bias", true),
            [Piece::Layer(3)]
        );
        assert_eq!(
            pieces_of("model.embed_tokens.weight", false),
            [Piece::Embedding]
        );
        assert_eq!(
            pieces_of("model.embed_tokens.weight", true),
            [Piece::Embedding, Piece::Head]
        );
        assert_eq!(
            pieces_of("transformer.wpe.weight", true),
            [Piece::Embedding]
        );
        assert_eq!(pieces_of("model.norm.weight", false), [Piece::Head]);
        assert_eq!(pieces_of("lm_head.weight", false), [Piece::Head]);
        assert_eq!(module_prefix("model.norm.weight"), "model.norm.");
    }
}
