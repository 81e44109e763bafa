//! [`CausalLm::quantize_4bit`]: the model's linear layers to 4 bits.

use std::path::Path;

use burn::tensor::{Device, FloatDType};

use super::{Bnb4bitConfig, Quantized4bit};
use crate::causal_lm::CausalLm;
use crate::error::ModelError;
use crate::streaming::{Piece, StreamedLm};

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
        self.quantize_layers(config, false)?;
        Ok(self)
    }

    /// Loads a Hugging Face checkpoint with its linear layers in 4 bits, reading one decoder
    /// layer at a time and quantizing it before the next: the float weights in memory at once
    /// are the embeddings, the head and one layer, not the whole model (a 1.5B model's 6 GB of
    /// float32 would not fit where its 4-bit form does). The same result as
    /// [`CausalLm::from_pretrained`] followed by [`CausalLm::quantize_4bit`], bit for bit.
    pub fn from_pretrained_4bit(
        dir: impl AsRef<Path>,
        config: &Bnb4bitConfig,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let mut streamed = StreamedLm::open(dir, device)?;
        for piece in streamed.pieces() {
            streamed.read(piece)?;
            if let Piece::Layer(_) = piece {
                streamed.model_mut().quantize_layers(config, true)?;
            }
        }
        Ok(streamed.into_model())
    }

    /// Quantizes the linear layers not quantized yet; with `only_read`, only those whose float
    /// weight has been read (not lazy) by a [`StreamedLm`].
    fn quantize_layers(
        &mut self,
        config: &Bnb4bitConfig,
        only_read: bool,
    ) -> Result<(), ModelError> {
        for (name, layer) in self.adaptable_layers_mut() {
            let unread = only_read && !layer.weight().is_initialized();
            if layer.quantized().is_some() || unread {
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
        Ok(())
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
