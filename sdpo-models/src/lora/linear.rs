//! The LoRA-capable linear layers: [`LoraLinear`] (an `nn.Linear`, Llama and Qwen2) and
//! GPT-2's [`Conv1D`](crate::Conv1D), both computing `x W + b + scale · (x Aᵀ) Bᵀ`.
//!
//! The base weight is kept `[in, out]` in memory for both. The low-rank factors are kept as
//! `Aᵀ` `[in, r]` and `Bᵀ` `[r, out]` so the branch is two small matmuls; the dense
//! `W + scale · B A` is never formed in a forward pass, so the gradient of a step is
//! adapter-shaped, not weight-shaped.
//!
//! With DoRA (`use_dora`, PEFT's weight-decomposed LoRA) the branch also holds a magnitude
//! `m` `[out]` and the layer computes `x W + b + (s - 1) ⊙ (x W) + s ⊙ scale · B (A x)` with
//! `s = m / ‖W + scale · B A‖` (the norm of each output row, detached from the graph as the
//! DoRA paper and PEFT do), which is `(m / ‖V‖) ⊙ (x V) + b` for `V = W + scale · B A`.

use burn::module::{Module, Param};
use burn::prelude::*;
use burn::tensor::Distribution;

use crate::init::SplitMix64;
use crate::precision::MatmulPrecision;
use crate::quant::Quantized4bit;

/// Row-major `[rows, cols]` -> `[cols, rows]`.
pub(crate) fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

/// The low-rank update of one layer: `scale · B (A dropout(x))`.
#[derive(Module, Debug)]
pub struct LoraBranch {
    /// `Aᵀ`: `[in, r]` (PEFT stores `lora_A.weight` as `[r, in]`).
    pub lora_a: Param<Tensor<2>>,
    /// `Bᵀ`: `[r, out]` (PEFT stores `lora_B.weight` as `[out, r]`).
    pub lora_b: Param<Tensor<2>>,
    /// `lora_alpha / r` or `lora_alpha / √r`.
    #[module(skip)]
    pub scale: f64,
    /// Dropout probability on the branch input, applied on autodiff devices only.
    #[module(skip)]
    pub dropout: f64,
    /// DoRA's magnitude `m` `[out]` (PEFT's `lora_magnitude_vector`), when the adapter is
    /// weight-decomposed.
    pub magnitude: Option<Param<Tensor<1>>>,
}

impl LoraBranch {
    /// A branch from host values in PEFT's layouts: `a` `[r, in]`, `b` `[out, r]` row-major.
    pub(crate) fn from_peft(
        a: Vec<f32>,
        b: Vec<f32>,
        [r, d_in, d_out]: [usize; 3],
        scale: f64,
        dropout: f64,
        device: &Device,
    ) -> Self {
        // Transposed on the host so the parameters are contiguous.
        let a = Tensor::<2>::from_data(TensorData::new(transpose(&a, r, d_in), [d_in, r]), device);
        let b =
            Tensor::<2>::from_data(TensorData::new(transpose(&b, d_out, r), [r, d_out]), device);
        Self {
            lora_a: Param::from_tensor(a),
            lora_b: Param::from_tensor(b),
            scale,
            dropout,
            magnitude: None,
        }
    }

    /// The same branch weight-decomposed (DoRA) with magnitude `m` `[out]` from the host.
    pub(crate) fn with_magnitude(mut self, magnitude: Vec<f32>) -> Self {
        let [_, _, d_out] = self.dims();
        let device = self.lora_a.device();
        let m = Tensor::<1>::from_data(TensorData::new(magnitude, [d_out]), &device);
        self.magnitude = Some(Param::from_tensor(m));
        self
    }

    /// The same branch weight-decomposed (DoRA) with PEFT's initial magnitude:
    /// `‖W + scale · B A‖` per output row for the base `W` `[in, out]`.
    pub(crate) fn with_initial_magnitude(mut self, base: Tensor<2>) -> Self {
        let norm = self.weight_norm(base);
        self.magnitude = Some(Param::from_tensor(norm));
        self
    }

    /// A new branch drawn from `rng` as PEFT initialises it (see
    /// [`InitLoraWeights`](super::InitLoraWeights)).
    pub(crate) fn init(
        [r, d_in, d_out]: [usize; 3],
        scale: f64,
        dropout: f64,
        init: super::InitLoraWeights,
        rng: &mut SplitMix64,
        device: &Device,
    ) -> Self {
        use super::InitLoraWeights as I;
        // kaiming_uniform_(a=√5) on [r, in]: gain √(2/6), bound √3 · gain / √fan_in = 1/√in.
        let a = match init {
            I::Default | I::Random => rng.uniforms(r * d_in, 1.0 / (d_in as f64).sqrt()),
            I::Gaussian => rng.normals(r * d_in, 1.0 / r as f64),
        };
        let b = match init {
            I::Default | I::Gaussian => vec![0.0; d_out * r],
            I::Random => rng.uniforms(d_out * r, 1.0 / (r as f64).sqrt()),
        };
        Self::from_peft(a, b, [r, d_in, d_out], scale, dropout, device)
    }

    /// Rank, input and output width.
    pub fn dims(&self) -> [usize; 3] {
        let [d_in, r] = self.lora_a.dims();
        let [_, d_out] = self.lora_b.dims();
        [r, d_in, d_out]
    }

    /// `scale · B (A dropout(x))`, the products in `precision`.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, in]`; output `[batch, seq, out]`
    pub fn forward(&self, x: Tensor<3>, precision: MatmulPrecision) -> Tensor<3> {
        self.update(self.dropout_input(x), precision)
    }

    /// Whether [`LoraBranch::dropout_input`] changes `x` (dropout on an autodiff device).
    fn drops(&self, x: &Tensor<3>) -> bool {
        self.dropout > 0.0 && x.device().is_autodiff()
    }

    /// `dropout(x)`: inverted dropout with the branch's probability on autodiff devices,
    /// `x` itself elsewhere.
    pub fn dropout_input(&self, x: Tensor<3>) -> Tensor<3> {
        if self.drops(&x) {
            let keep = 1.0 - self.dropout;
            let mask = x.random_like(Distribution::Bernoulli(keep));
            x * mask / keep
        } else {
            x
        }
    }

    /// `scale · B (A x)` without dropout, the products in `precision`.
    pub fn update(&self, x: Tensor<3>, precision: MatmulPrecision) -> Tensor<3> {
        let down = precision.linear(x, self.lora_a.val(), None);
        precision.linear(down, self.lora_b.val(), None) * self.scale
    }

    /// `‖W + scale · B A‖` of each output row `[out]` for the base `W` `[in, out]`, in float32
    /// and detached: no gradient flows through the norm (PEFT's `get_weight_norm`).
    pub fn weight_norm(&self, base: Tensor<2>) -> Tensor<1> {
        let delta = self
            .lora_a
            .val()
            .detach()
            .matmul(self.lora_b.val().detach())
            * self.scale;
        (base.detach() + delta)
            .powi_scalar(2)
            .sum_dim(0)
            .sqrt()
            .squeeze_dim::<1>(0)
            .detach()
    }

    /// DoRA's per-output factor `m / ‖W + scale · B A‖` `[out]` (gradient through `m` only),
    /// or `None` for a plain LoRA branch.
    pub fn dora_factor(&self, base: Tensor<2>) -> Option<Tensor<1>> {
        let magnitude = self.magnitude.as_ref()?;
        Some(magnitude.val() / self.weight_norm(base))
    }

    /// The dense update `scale · (B A)ᵀ` `[in, out]`, for merging.
    pub fn delta(&self) -> Tensor<2> {
        self.lora_a.val().matmul(self.lora_b.val()) * self.scale
    }

    /// The merged weight `[in, out]` for the base `W` `[in, out]`: `W + scale · (B A)ᵀ`, each
    /// output column scaled by DoRA's factor when the branch has a magnitude (PEFT's
    /// `merge_and_unload`). Detached.
    pub fn merged(&self, base: Tensor<2>) -> Tensor<2> {
        let factor = self.dora_factor(base.clone());
        let merged = base.detach() + self.delta().detach();
        match factor {
            Some(f) => merged * f.detach().unsqueeze_dim::<2>(0),
            None => merged,
        }
    }

    /// `Aᵀ` and `Bᵀ` transposed back to PEFT's `[r, in]` and `[out, r]`.
    pub fn to_peft(&self) -> (Tensor<2>, Tensor<2>) {
        (self.lora_a.val().transpose(), self.lora_b.val().transpose())
    }
}

/// A layer trained in full next to the adapters (PEFT's `modules_to_save`): a trainable copy
/// of the base weight and bias.
#[derive(Module, Debug)]
pub struct TrainedCopy {
    /// `[in, out]`.
    pub weight: Param<Tensor<2>>,
    /// `[out]`.
    pub bias: Option<Param<Tensor<1>>>,
}

/// `nn.Linear` with an optional LoRA branch: `x W + b + scale · B (A x)`.
///
/// Loads and saves as a Hugging Face linear (`weight` `[out, in]`, `bias` `[out]`); the branch
/// is saved in PEFT's adapter file, not in the checkpoint.
#[derive(Module, Debug)]
pub struct LoraLinear {
    /// `[in, out]` (burn's layout; transposed to `[out, in]` on save).
    pub weight: Param<Tensor<2>>,
    /// `[out]`.
    pub bias: Option<Param<Tensor<1>>>,
    /// The adapter, when one is attached.
    pub lora: Option<LoraBranch>,
    /// The trainable copy when this layer is in `modules_to_save`.
    pub trained: Option<TrainedCopy>,
    /// The base weight in 4 bits (QLoRA); `weight` is then empty.
    pub quantized: Option<Quantized4bit>,
}

impl LoraLinear {
    /// A plain linear layer from a weight `[in, out]` and bias.
    pub(crate) fn new(weight: Param<Tensor<2>>, bias: Option<Param<Tensor<1>>>) -> Self {
        Self {
            weight,
            bias,
            lora: None,
            trained: None,
            quantized: None,
        }
    }

    /// `x W + b`, plus the adapter's update when one is attached; the products in `precision`.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, in]`; output `[batch, seq, out]`
    pub fn forward(&self, x: Tensor<3>, precision: MatmulPrecision) -> Tensor<3> {
        adapted_forward(self, x, precision)
    }
}

/// What the adapter code needs from a LoRA-capable layer, whatever its checkpoint layout.
pub(crate) trait Adaptable {
    /// `[in, out]`; empty (`[0, 0]`) when the base is quantized.
    fn weight(&self) -> &Param<Tensor<2>>;
    /// The base weight in 4 bits, when quantized.
    fn quantized(&self) -> Option<&Quantized4bit>;
    /// Holds the base weight in 4 bits from now on, dropping the float weight.
    fn set_quantized(&mut self, quantized: Quantized4bit);
    fn bias(&self) -> Option<&Param<Tensor<1>>>;
    fn lora(&self) -> Option<&LoraBranch>;
    fn trained(&self) -> Option<&TrainedCopy>;
    fn set_lora(&mut self, lora: Option<LoraBranch>);
    fn set_trained(&mut self, trained: Option<TrainedCopy>);
    /// A new float base (a merge), replacing a 4-bit one.
    fn set_base(&mut self, weight: Param<Tensor<2>>, bias: Option<Param<Tensor<1>>>);
    /// Whether the checkpoint stores the weight `[in, out]` (GPT-2's `Conv1D`) rather than
    /// `[out, in]` (`nn.Linear`).
    fn fan_in_fan_out(&self) -> bool;
}

impl Adaptable for LoraLinear {
    fn weight(&self) -> &Param<Tensor<2>> {
        &self.weight
    }
    fn bias(&self) -> Option<&Param<Tensor<1>>> {
        self.bias.as_ref()
    }
    fn lora(&self) -> Option<&LoraBranch> {
        self.lora.as_ref()
    }
    fn trained(&self) -> Option<&TrainedCopy> {
        self.trained.as_ref()
    }
    fn set_lora(&mut self, lora: Option<LoraBranch>) {
        self.lora = lora;
    }
    fn set_trained(&mut self, trained: Option<TrainedCopy>) {
        self.trained = trained;
    }
    fn set_base(&mut self, weight: Param<Tensor<2>>, bias: Option<Param<Tensor<1>>>) {
        self.weight = weight;
        self.bias = bias;
        self.quantized = None;
    }
    fn fan_in_fan_out(&self) -> bool {
        false
    }
    fn quantized(&self) -> Option<&Quantized4bit> {
        self.quantized.as_ref()
    }
    fn set_quantized(&mut self, quantized: Quantized4bit) {
        self.weight = empty_weight(&self.weight.device());
        self.quantized = Some(quantized);
    }
}

/// The zero-size, frozen stand-in for a base weight held in 4 bits: any use of it as a
/// weight fails on its shape instead of computing with wrong values.
pub(crate) fn empty_weight(device: &Device) -> Param<Tensor<2>> {
    Param::from_tensor(Tensor::zeros([0, 0], device)).set_require_grad(false)
}

/// `[in, out]` of a layer's base weight, quantized or not.
pub(crate) fn base_dims(layer: &(impl Adaptable + ?Sized)) -> [usize; 2] {
    match layer.quantized() {
        Some(q) => [q.shape[1], q.shape[0]],
        None => layer.weight().dims(),
    }
}

/// The base weight `[in, out]` in float32: dequantized when held in 4 bits, widened when held
/// in a lower float dtype.
pub(crate) fn dense_base(layer: &(impl Adaptable + ?Sized)) -> Tensor<2> {
    match layer.quantized() {
        Some(q) => q.dequantize().transpose(),
        None => layer.weight().val().cast(burn::tensor::FloatDType::F32),
    }
}

/// The forward pass of every LoRA-capable layer: the trainable copy when there is one, else the
/// base; then the adapter's update.
pub(crate) fn adapted_forward<L: Adaptable>(
    layer: &L,
    x: Tensor<3>,
    precision: MatmulPrecision,
) -> Tensor<3> {
    let branch_input = layer.lora().map(|_| x.clone());
    let base = match (layer.trained(), layer.quantized()) {
        (Some(copy), _) => {
            precision.linear(x, copy.weight.val(), copy.bias.as_ref().map(Param::val))
        }
        (None, Some(q)) => q.linear(x, layer.bias().map(Param::val), precision),
        (None, None) => precision.linear(x, layer.weight().val(), layer.bias().map(Param::val)),
    };
    match (layer.lora(), branch_input) {
        (Some(lora), Some(x)) => match &lora.magnitude {
            Some(magnitude) => dora_forward(layer, lora, magnitude, base, x, precision),
            None => base + lora.forward(x, precision),
        },
        _ => base,
    }
}

/// PEFT's DoRA forward on top of the base output `base` (bias included) for input `x`:
/// `base + (s - 1) ⊙ x_d W + s ⊙ scale · B (A x_d)` with `s = m / ‖W + scale · B A‖`
/// (as [`LoraBranch::dora_factor`]) and `x_d = dropout(x)`. Without dropout `x_d W` is `base - b` (PEFT reuses the base
/// output); with dropout the base product is recomputed on the dropped input.
fn dora_forward<L: Adaptable>(
    layer: &L,
    lora: &LoraBranch,
    magnitude: &Param<Tensor<1>>,
    base: Tensor<3>,
    x: Tensor<3>,
    precision: MatmulPrecision,
) -> Tensor<3> {
    let dense = dense_base(layer);
    let factor = (magnitude.val() / lora.weight_norm(dense.clone())).unsqueeze::<3>();
    let (base_product, x) = if lora.drops(&x) {
        let x = lora.dropout_input(x);
        (precision.linear(x.clone(), dense, None), x)
    } else {
        let product = match layer.bias() {
            Some(bias) => base.clone() - bias.val().unsqueeze::<3>(),
            None => base.clone(),
        };
        (product, x)
    };
    let update = lora.update(x, precision);
    base + (factor.clone() - 1.0) * base_product + factor * update
}
