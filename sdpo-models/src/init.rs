//! Parameter initialisation: lazy zeros for modules that a checkpoint will fill, or seeded
//! random values drawn on the host (so a seed gives the same weights on every backend and is
//! not disturbed by other code seeding the device's generator).

use burn::module::Param;
use burn::nn::{
    Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig,
    RmsNorm, RmsNormConfig,
};
use burn::prelude::*;

use crate::lora::LoraLinear;

/// SplitMix64: tiny, fast, good enough for weight initialisation, identical everywhere.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in the open interval (0, 1).
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// `n` samples of U(-bound, bound).
    pub(crate) fn uniforms(&mut self, n: usize, bound: f64) -> Vec<f32> {
        (0..n)
            .map(|_| ((2.0 * self.uniform() - 1.0) * bound) as f32)
            .collect()
    }

    /// `n` samples of N(0, std²) by Box-Muller.
    pub(crate) fn normals(&mut self, n: usize, std: f64) -> Vec<f32> {
        let mut out = Vec::with_capacity(n + 1);
        while out.len() < n {
            let radius = (-2.0 * self.uniform().ln()).sqrt() * std;
            let angle = 2.0 * std::f64::consts::PI * self.uniform();
            out.push((radius * angle.cos()) as f32);
            out.push((radius * angle.sin()) as f32);
        }
        out.truncate(n);
        out
    }
}

/// Builds the layers of a model, either as placeholders for loading or with seeded weights.
pub(crate) struct Init {
    device: Device,
    rng: Option<SplitMix64>,
    std: f64,
}

impl Init {
    /// Placeholders (lazy zeros / ones) that a checkpoint overwrites; nothing is allocated
    /// until a value is read.
    pub(crate) fn for_loading(device: &Device) -> Self {
        Self {
            device: device.clone(),
            rng: None,
            std: 0.0,
        }
    }

    /// transformers' `_init_weights`: linear and embedding weights N(0, std²), biases 0, norm
    /// weights 1; drawn from `seed`.
    pub(crate) fn seeded(device: &Device, seed: u64, std: f64) -> Self {
        Self {
            device: device.clone(),
            rng: Some(SplitMix64(seed)),
            std,
        }
    }

    /// A weight of any rank drawn from N(0, std²) (zeros when loading).
    pub(crate) fn normal<const D: usize>(&mut self, shape: [usize; D]) -> Param<Tensor<D>> {
        match self.rng.as_mut() {
            None => Initializer::Zeros.init(shape, &self.device),
            Some(rng) => {
                let values = rng.normals(shape.iter().product(), self.std);
                Param::from_tensor(Tensor::from_data(
                    TensorData::new(values, shape),
                    &self.device,
                ))
            }
        }
    }

    /// burn `Linear` (weight stored `[d_in, d_out]`), optional zero bias.
    pub(crate) fn linear(&mut self, d_in: usize, d_out: usize, bias: bool) -> Linear {
        let mut linear = LinearConfig::new(d_in, d_out)
            .with_bias(bias)
            .with_initializer(Initializer::Zeros)
            .init(&self.device);
        if self.rng.is_some() {
            linear.weight = self.normal([d_in, d_out]);
        }
        linear
    }

    /// A LoRA-capable linear layer (weight `[d_in, d_out]`), optional zero bias, no adapter.
    pub(crate) fn lora_linear(&mut self, d_in: usize, d_out: usize, bias: bool) -> LoraLinear {
        let Linear { weight, bias } = self.linear(d_in, d_out, bias);
        LoraLinear::new(weight, bias)
    }

    /// Token or position embedding `[n, d]`.
    pub(crate) fn embedding(&mut self, n: usize, d: usize) -> Embedding {
        let mut embedding = EmbeddingConfig::new(n, d)
            .with_initializer(Initializer::Zeros)
            .init(&self.device);
        if self.rng.is_some() {
            embedding.weight = self.normal([n, d]);
        }
        embedding
    }

    /// RMSNorm whose scale `weight + offset` is 1: weight 1, or 0 for Gemma's `x · (1 + w)`
    /// (transformers' initialisation of each).
    pub(crate) fn rms_norm(&self, d: usize, eps: f64, offset: f64) -> RmsNorm {
        let mut norm = RmsNormConfig::new(d).with_epsilon(eps).init(&self.device);
        if offset != 0.0 {
            norm.gamma = Initializer::Constant {
                value: 1.0 - offset,
            }
            .init([d], &self.device);
        }
        norm
    }

    /// LayerNorm with unit weight and zero bias.
    pub(crate) fn layer_norm(&self, d: usize, eps: f64) -> LayerNorm {
        LayerNormConfig::new(d).with_epsilon(eps).init(&self.device)
    }

    /// A `[n]` vector of zeros (biases).
    pub(crate) fn zeros(&self, n: usize) -> Param<Tensor<1>> {
        Initializer::Zeros.init([n], &self.device)
    }
}
