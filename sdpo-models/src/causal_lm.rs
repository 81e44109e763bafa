//! [`CausalLm`]: one type for every supported architecture, chosen at run time from
//! `config.json`.

use std::path::Path;

use burn::module::Module;
use burn::prelude::*;
use burn::store::{ModuleSnapshot, SafetensorsStore};

use crate::checkpoint::{
    HfLayoutAdapter, WEIGHTS_FILE, check_tensors, expected_tensors, load_files, read_headers,
    weight_files,
};
use crate::config::ModelConfig;
use crate::error::ModelError;
use crate::families::Decoder;
use crate::families::gemma::GemmaForCausalLm;
use crate::families::gpt2::Gpt2LmHeadModel;
use crate::families::llama::LlamaForCausalLm;
use crate::families::olmo2::Olmo2ForCausalLm;
use crate::families::phi3::Phi3ForCausalLm;
use crate::init::Init;
use crate::output::CausalLmOutput;
use crate::precision::MatmulPrecision;

/// A causal language model of any supported architecture.
///
/// Works on plain devices (inference, the frozen reference: call [`Module::valid`] on a
/// trained copy) and on autodiff devices (training). Everything is tensor operations, so the
/// same model runs on flex, wgpu and tch. Each variant is one family of `src/families/`.
#[derive(Module, Debug)]
pub enum CausalLm {
    /// `LlamaForCausalLM` (and `MistralForCausalLM`).
    Llama(LlamaForCausalLm),
    /// `Qwen2ForCausalLM` (the Llama layer with q/k/v biases).
    Qwen2(LlamaForCausalLm),
    /// `GPT2LMHeadModel`.
    Gpt2(Gpt2LmHeadModel),
    /// `Qwen3ForCausalLM` (the Llama layer with per-head query/key norms).
    Qwen3(LlamaForCausalLm),
    /// `SmolLM3ForCausalLM` (the Llama layer, some layers without RoPE).
    SmolLm3(LlamaForCausalLm),
    /// `Olmo2ForCausalLM`.
    Olmo2(Olmo2ForCausalLm),
    /// `Phi3ForCausalLM`.
    Phi3(Phi3ForCausalLm),
    /// `Gemma2ForCausalLM`.
    Gemma2(GemmaForCausalLm),
    /// `Gemma3ForCausalLM`.
    Gemma3(GemmaForCausalLm),
}

/// Runs `$body` with `$m` bound to the variant's model, whatever the variant: the one place
/// that lists the variants for generic module operations (loading, saving).
macro_rules! with_family {
    ($model:expr, $m:ident => $body:expr) => {
        match $model {
            CausalLm::Llama($m)
            | CausalLm::Qwen2($m)
            | CausalLm::Qwen3($m)
            | CausalLm::SmolLm3($m) => $body,
            CausalLm::Gpt2($m) => $body,
            CausalLm::Olmo2($m) => $body,
            CausalLm::Phi3($m) => $body,
            CausalLm::Gemma2($m) | CausalLm::Gemma3($m) => $body,
        }
    };
}

impl CausalLm {
    /// The model as its family's pieces.
    pub(crate) fn decoder(&self) -> &dyn Decoder {
        with_family!(self, m => m as &dyn Decoder)
    }

    /// [`CausalLm::decoder`], mutable.
    pub(crate) fn decoder_mut(&mut self) -> &mut dyn Decoder {
        with_family!(self, m => m as &mut dyn Decoder)
    }

    /// Builds the module for `config` with `init`'s parameters.
    pub(crate) fn build(config: &ModelConfig, init: &mut Init) -> Self {
        (crate::families::by_architecture(config.architecture).build)(config, init)
    }

    /// A model with random weights drawn from `seed` (transformers' initialisation: linear and
    /// embedding weights N(0, `initializer_range`²), biases 0, norm weights 1). The same seed
    /// gives the same weights on every backend.
    pub fn from_config(config: &ModelConfig, seed: u64, device: &Device) -> Self {
        let mut init = Init::seeded(device, seed, config.initializer_range);
        Self::build(config, &mut init)
    }

    /// Loads a Hugging Face checkpoint directory: `config.json` plus `model.safetensors` or a
    /// sharded `model.safetensors.index.json`, stored as F32, BF16 or F16 (kept as F32).
    ///
    /// Loading is strict: missing, unexpected and mis-shaped tensors are errors that list
    /// them. Exceptions, as in transformers: with tied embeddings a stored `lm_head.weight` is
    /// ignored, and so are the non-parameter buffers `*.attn.bias`, `*.attn.masked_bias`
    /// (old GPT-2 exports) and `*.rotary_emb.inv_freq`.
    pub fn from_pretrained(dir: impl AsRef<Path>, device: &Device) -> Result<Self, ModelError> {
        let dir = dir.as_ref();
        let config = ModelConfig::from_pretrained_dir(dir)?;
        let files = weight_files(dir)?;
        let stored = read_headers(&files)?;
        let mut model = Self::build(&config, &mut Init::for_loading(device));
        let tied_head = config.tie_word_embeddings.then_some("lm_head.weight");
        with_family!(&mut model, m => {
            check_tensors(dir, &expected_tensors(m), &stored, tied_head)?;
            load_files(m, &files)?;
        });
        Ok(model)
    }

    /// Every parameter with its checkpoint name and layout (nothing is allocated).
    pub(crate) fn param_slots(&self) -> Vec<crate::checkpoint::ParamSlot> {
        with_family!(self, m => crate::checkpoint::param_slots(m))
    }

    /// Writes `config.json` and `model.safetensors` (each tensor in its dtype, Hugging Face key names and
    /// layouts, metadata `format: pt`) into `dir`, creating it, so that transformers'
    /// `from_pretrained(dir)` loads the model. Existing files are replaced.
    ///
    /// A model with a LoRA adapter attached is refused ([`ModelError::AdapterNotMerged`]):
    /// save the adapter with [`CausalLm::save_adapter`], or merge it first with
    /// [`CausalLm::merge_adapters`].
    pub fn save_pretrained(&self, dir: impl AsRef<Path>) -> Result<(), ModelError> {
        let dir = dir.as_ref();
        if self.adapter().is_some() {
            return Err(ModelError::AdapterNotMerged);
        }
        if self.is_quantized() {
            return Err(ModelError::QuantizedBase);
        }
        std::fs::create_dir_all(dir).map_err(|source| ModelError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let config_path = dir.join("config.json");
        let json =
            serde_json::to_string_pretty(&self.config().hf.to_json_value()).map_err(|source| {
                ModelError::Json {
                    path: config_path.clone(),
                    source,
                }
            })?;
        std::fs::write(&config_path, json + "\n").map_err(|source| ModelError::Io {
            path: config_path.clone(),
            source,
        })?;
        let weights = dir.join(WEIGHTS_FILE);
        let mut store = SafetensorsStore::from_file(weights.clone())
            .with_to_adapter(HfLayoutAdapter::to_pytorch())
            .clear_metadata()
            .metadata("format", "pt")
            .overwrite(true);
        let result = with_family!(self, m => m.save_into(&mut store));
        result.map_err(|e| ModelError::Store {
            path: weights,
            message: e.to_string(),
        })
    }

    /// The resolved configuration (vocabulary size, widths, ...).
    pub fn config(&self) -> &ModelConfig {
        self.decoder().config()
    }

    /// The same model with its matrix products in `precision` (bfloat16 or float16 with float32
    /// everywhere else, as PyTorch's autocast; see [`MatmulPrecision`]). The parameters keep
    /// their dtype; float32 is the default.
    pub fn with_matmul_precision(mut self, precision: MatmulPrecision) -> Self {
        self.decoder_mut().config_mut().matmul_precision = precision;
        self
    }

    /// Logits for every position.
    ///
    /// Causal attention plus a key padding mask from `attention_mask`; sequences are right
    /// padded and positions are `0..seq` for every row. Logits at padded positions are what
    /// transformers computes there (the pad token attends to the earlier real tokens) and are
    /// normally ignored through the loss mask.
    ///
    /// # Shapes
    /// - `input_ids`: `[batch, seq]` token ids `< vocab_size`
    /// - `attention_mask`: `[batch, seq]`, 1 for tokens and 0 for padding
    /// - output: `[batch, seq, vocab_size]`
    pub fn forward(&self, input_ids: Tensor<2, Int>, attention_mask: Tensor<2, Int>) -> Tensor<3> {
        self.forward_with_hidden_states(input_ids, attention_mask)
            .logits
    }

    /// [`CausalLm::forward`] plus the hidden states transformers returns with
    /// `output_hidden_states=True` (see [`CausalLmOutput`]).
    ///
    /// # Shapes
    /// - `input_ids`, `attention_mask`: `[batch, seq]`
    /// - `logits`: `[batch, seq, vocab_size]`
    /// - `hidden_states`: `num_hidden_layers + 1` tensors `[batch, seq, hidden_size]`
    pub fn forward_with_hidden_states(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Tensor<2, Int>,
    ) -> CausalLmOutput {
        let ctx = self
            .stack_context(attention_mask, usize::MAX)
            .with_fused_attention(false);
        let mut x = self.embed(input_ids, &ctx);
        let mut hidden_states = vec![x.clone()];
        let layers = self.num_layers();
        for layer in 0..layers {
            x = self.layer_forward(layer, x, &ctx);
            if layer + 1 < layers {
                hidden_states.push(x.clone());
            }
        }
        let x = self.final_norm(x);
        hidden_states.push(x.clone());
        CausalLmOutput {
            logits: self.lm_head(x),
            hidden_states,
        }
    }

    /// Checks ids and mask against the model before a forward pass: equal shapes, no
    /// sequence longer than the model supports (GPT-2's learned positions), ids in range.
    /// Reads the ids back to the host, so call it on user input, not in a hot loop.
    pub fn check_inputs(
        &self,
        input_ids: &Tensor<2, Int>,
        attention_mask: &Tensor<2, Int>,
    ) -> Result<(), ModelError> {
        let c = self.config();
        let [batch, seq] = input_ids.dims();
        if attention_mask.dims() != [batch, seq] {
            return Err(ModelError::InvalidInput(format!(
                "input_ids are {:?} but attention_mask is {:?}",
                [batch, seq],
                attention_mask.dims()
            )));
        }
        c.check_sequence_length(seq)?;
        let max = input_ids.clone().max().into_scalar::<i64>();
        let min = input_ids.clone().min().into_scalar::<i64>();
        if batch * seq > 0 && (min < 0 || max >= c.vocab_size as i64) {
            return Err(ModelError::InvalidInput(format!(
                "token ids span {min}..={max}, outside 0..{}",
                c.vocab_size
            )));
        }
        Ok(())
    }
}
