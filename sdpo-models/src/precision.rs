//! Mixed precision: matrix products in bfloat16 or float16, everything else in float32.
//!
//! [`MatmulPrecision`] is what PyTorch's `torch.autocast` does for a causal LM (and so what TRL's
//! `bf16 = True` / `fp16 = True` mean) for the products that hold the parameters: the operands
//! of every linear layer, the LoRA branch and the output head are cast to the low-precision
//! dtype, the product runs there, and its result comes back as float32. Norms, RoPE,
//! activations, residual sums, the attention (scores, softmax, weighted sum), and the
//! log-softmax over the vocabulary stay in float32; the parameters keep their own dtype
//! (float32 "master weights" unless [`store_matrices_as`] holds them lower), and so do their
//! gradients: `cast` is differentiable and its backward casts the gradient back.
//!
//! The blocked attention's products stay in float32 unlike autocast's: they are a small share
//! of the products at these lengths, and casting the `[queries, keys]` scores to and from the
//! low dtype cost more than the faster product saved (SmolLM2-135M, 512-token rows, LibTorch on
//! the CPU: 12.9 s per step with float32 attention, 13.6 s with bfloat16; docs/benchmarks.md).
//! The fused attention (LibTorch's CPU device, [`crate::FusedAttention`]) runs in the low dtype
//! as autocast runs PyTorch's `scaled_dot_product_attention`: only the queries, keys and values
//! are cast there, never the scores. flex's fused attention is float32 only: on flex a
//! low-precision run keeps the blocked attention.
//!
//! With [`MatmulPrecision::F32`] every cast is a no-op and the forward is bit-for-bit the plain
//! float32 forward.
//!
//! [`store_matrices_as`] is the other half: it keeps a model's matrices (linear weights,
//! embeddings) in a low-precision dtype in memory (a frozen reference's `ref_dtype`, a PEFT
//! base's or a fully trained policy's `dtype`), half the bytes; the forward casts them to the
//! dtype each product needs, and the gradient of a trained matrix comes back in its dtype.
//! [`matrix_dtype`] says which dtype a model holds its matrices in.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::FloatDType;
use burn::tensor::module::linear;

use crate::CausalLm;

/// The dtype matrix products run in; everything else runs in float32.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MatmulPrecision {
    /// Everything in float32 (the default).
    #[default]
    F32,
    /// Products in bfloat16 (TRL's `bf16`).
    Bf16,
    /// Products in float16 (TRL's `fp16`).
    F16,
}

impl MatmulPrecision {
    /// The dtype products run in.
    pub fn dtype(self) -> FloatDType {
        match self {
            Self::F32 => FloatDType::F32,
            Self::Bf16 => FloatDType::BF16,
            Self::F16 => FloatDType::F16,
        }
    }

    /// The name used in configuration files and logs: `float32`, `bfloat16`, `float16`.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "float32",
            Self::Bf16 => "bfloat16",
            Self::F16 => "float16",
        }
    }

    /// `a · b` with both operands in this precision, the result in float32.
    pub fn matmul<const D: usize>(self, a: Tensor<D>, b: Tensor<D>) -> Tensor<D> {
        let dtype = self.dtype();
        a.cast(dtype).matmul(b.cast(dtype)).cast(FloatDType::F32)
    }

    /// `x · w + b` (`w` stored `[in, out]`, as burn's `linear`) with the product in this
    /// precision and the bias added in float32.
    pub fn linear(self, x: Tensor<3>, weight: Tensor<2>, bias: Option<Tensor<1>>) -> Tensor<3> {
        let on_libtorch = crate::libtorch::holds(&x);
        if self == Self::F32 && !on_libtorch {
            // burn's own linear layer: bit for bit the plain float32 forward.
            return linear(
                x,
                weight.cast(FloatDType::F32),
                bias.map(|b| b.cast(FloatDType::F32)),
            );
        }
        let dtype = self.dtype();
        let (x, weight) = (x.cast(dtype), weight.cast(dtype));
        let out = if on_libtorch {
            merged_rows_product(x, weight)
        } else {
            linear(x, weight, None)
        }
        .cast(FloatDType::F32);
        match bias {
            Some(b) => out + b.cast(FloatDType::F32).unsqueeze::<3>(),
            None => out,
        }
    }
}

/// `x · w` as one `[rows·T, in] · [in, out]` product, as `torch.nn.functional.linear` runs it.
/// burn's `linear` multiplies `[rows, T, in]` by the weight broadcast to `[1, in, out]`, which
/// LibTorch's batched product materialises, a copy of the weight per row: a bfloat16
/// `[4, 512, 896] · [896, 4864]` took 31 ms that way and 19 ms merged on this CPU.
fn merged_rows_product(x: Tensor<3>, weight: Tensor<2>) -> Tensor<3> {
    let [rows, seq, d_in] = x.dims();
    let [_, d_out] = weight.dims();
    x.reshape([rows * seq, d_in])
        .matmul(weight)
        .reshape([rows, seq, d_out])
}

/// Keeps every matrix parameter (linear weights, embeddings; two or more dimensions) in `dtype`
/// and the vectors (norm scales, biases) in float32: the storage of a frozen reference model
/// held in low precision (`ref_dtype`). The forward casts each matrix to the dtype its product
/// runs in ([`MatmulPrecision`]), so the model computes as before with rounded weights.
pub fn store_matrices_as<M: Module>(module: M, dtype: FloatDType) -> M {
    module.map(&mut MatrixCast { dtype })
}

/// Keeps the matrices every use of which is a product, the decoder layers' weights and an
/// untied output head's, in `dtype`; embedding tables (their rows are read as float32) and
/// vectors stay as they are. On a model whose products run in `dtype`
/// ([`MatmulPrecision`]) this changes no result, bit for bit: each product casts its weight to
/// `dtype` anyway, and now finds it there. It saves that cast on every forward and half the
/// memory of those weights (SmolLM2-135M: 215 of 540 MB) for a frozen model, e.g. the
/// reference of a `bf16` run.
pub fn store_product_weights_as(mut model: CausalLm, dtype: FloatDType) -> CausalLm {
    model.decoder_mut().store_product_weights_as(dtype);
    model
}

/// The dtype `module` holds its matrices in: that of its first float parameter of two or more
/// dimensions (float32 when it has none).
pub fn matrix_dtype<M: Module>(module: &M) -> FloatDType {
    let mut first = FirstMatrixDtype(None);
    module.visit(&mut first);
    first.0.unwrap_or(FloatDType::F32)
}

/// Records the dtype of the first matrix parameter visited.
struct FirstMatrixDtype(Option<FloatDType>);

impl ModuleVisitor for FirstMatrixDtype {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if D >= 2 && self.0.is_none() {
            self.0 = Some(param.val().dtype().into());
        }
    }
}

/// Casts every matrix parameter (two or more dimensions) to `dtype`.
pub(crate) struct MatrixCast {
    pub(crate) dtype: FloatDType,
}

impl ModuleMapper for MatrixCast {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if D < 2 {
            return param;
        }
        let dtype = self.dtype;
        // Detached: on an autodiff device the cast would otherwise be a non-leaf tensor, which
        // cannot be a trained parameter.
        param.map(|tensor| tensor.cast(dtype).detach())
    }
}
