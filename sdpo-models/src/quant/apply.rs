//! [`CausalLm::quantize_4bit`]: the model's linear layers to 4 bits.

use burn::tensor::FloatDType;

use super::{Bnb4bitConfig, Quantized4bit};
use crate::causal_lm::CausalLm;
use crate::error::ModelError;

impl CausalLm {
    /// Holds the weight of every linear layer of the decoder (attention and MLP projections,
    /// the layers an adapter can target) in 4 bits as `config` says, bitsandbytes'
    /// `Linear4bit` with transformers' `load_in_4bit`; the float weights are dropped.
    /// Embeddings, norms, biases and the output head stay as they are (transformers keeps the
    /// head unquantized). Quantize before attaching or loading an adapter. Layers already in
    /// 4 bits are left alone.
    ///
    /// Errors: an adapter is already attached.
    pub fn quantize_4bit(mut self, config: &Bnb4bitConfig) -> Result<Self, ModelError> {
        if let Some(adapter) = self.adapter() {
            return Err(ModelError::AdapterAlreadyAttached {
                layers: adapter.adapted.len() + adapter.trained.len(),
            });
        }
        for (name, layer) in self.adaptable_layers_mut() {
            if layer.quantized().is_some() {
                continue;
            }
            let weight = layer.weight().val();
            let device = weight.device();
            let [d_in, d_out] = weight.dims();
            // bitsandbytes quantizes the `[out, in]` weight in row-major order (a GPT-2
            // `Conv1D`, stored `[in, out]`, is transposed first by transformers).
            let values = weight
                .transpose()
                .cast(FloatDType::F32)
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .map_err(|e| ModelError::DeviceRead {
                    what: format!("the weight of `{name}`"),
                    message: format!("{e:?}"),
                })?;
            layer.set_quantized(Quantized4bit::quantize(
                &values,
                [d_out, d_in],
                config,
                &device,
            ));
        }
        Ok(self)
    }

    /// The layers held in 4 bits with their full Hugging Face module names, in model order.
    pub fn quantized_layers(&self) -> Vec<(String, &Quantized4bit)> {
        self.adaptable_layers()
            .into_iter()
            .filter_map(|(name, layer)| layer.quantized().map(|q| (name, q)))
            .collect()
    }

    /// Whether any linear layer is held in 4 bits.
    pub fn is_quantized(&self) -> bool {
        self.adaptable_layers()
            .iter()
            .any(|(_, layer)| layer.quantized().is_some())
    }

    /// Bytes the 4-bit weights hold on the device (codes, scales, tables), summed over layers.
    pub fn quantized_bytes(&self) -> usize {
        self.adaptable_layers()
            .iter()
            .filter_map(|(_, layer)| layer.quantized().map(Quantized4bit::bytes))
            .sum()
    }
}
