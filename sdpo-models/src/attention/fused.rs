//! Fused causal attention on LibTorch's CPU device: PyTorch's flash-attention kernels
//! (`_scaled_dot_product_flash_attention_for_cpu` and its backward), the kernels TRL's
//! `DPOTrainer` runs through `torch.nn.functional.scaled_dot_product_attention`.
//!
//! The forward never builds the `[rows, heads, T, T]` scores (it works in tiles, skips the
//! tiles above the diagonal and keeps only each query's log-sum-exp), and the backward
//! recomputes the tiles from that log-sum-exp, so a layer's attention costs one forward and
//! one backward instead of the blocked forward, a tracked re-forward and autodiff's backward.
//!
//! Used only where it computes exactly what the blocked attention computes for every position
//! a loss reads: plain rows (not packed) whose real tokens are a prefix of the row (right
//! padding), where the causal mask alone hides every padded key from every real query. A
//! padded query sees the padded keys before it (the blocked path hides them); its output feeds
//! only later padded positions, which no log-prob reads, and gets no gradient.
//!
//! On any other backend or device (flex, wgpu, LibTorch on CUDA), and for tracked tensors, the
//! functions return `None` and the caller runs the blocked attention.

use burn::prelude::*;

use crate::MatmulPrecision;

/// What a fused attention forward keeps for its backward: the (possibly low-precision)
/// queries, keys, values, output and the per-query log-sum-exp.
pub struct FusedAttention {
    #[cfg(feature = "tch")]
    saved: libtorch::Saved,
    #[cfg(not(feature = "tch"))]
    never: std::convert::Infallible,
}

impl std::fmt::Debug for FusedAttention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FusedAttention")
    }
}

impl FusedAttention {
    /// The gradients of the queries, keys and values from the gradient of the attention's
    /// merged output, or `None` when `grad` is not on the forward's backend (untracked
    /// LibTorch CPU).
    ///
    /// # Shapes
    /// - `grad`: `[rows, T, heads * head_dim]`
    /// - output: `dq` `[rows, heads, T, head_dim]`, `dk`, `dv` `[rows, kv_heads, T, head_dim]`
    pub fn backward(self, grad: Tensor<3>) -> Option<(Tensor<4>, Tensor<4>, Tensor<4>)> {
        #[cfg(feature = "tch")]
        {
            self.saved.backward(grad)
        }
        #[cfg(not(feature = "tch"))]
        {
            let _ = grad;
            match self.never {}
        }
    }
}

/// Whether `attention_mask` (`[rows, T]`) lives on LibTorch's CPU device, untracked: the only
/// place [`causal_attention`] runs. Reads nothing back from the device.
pub(crate) fn available(attention_mask: &Tensor<2, Int>) -> bool {
    #[cfg(feature = "tch")]
    {
        libtorch::on_cpu(attention_mask)
    }
    #[cfg(not(feature = "tch"))]
    {
        let _ = attention_mask;
        false
    }
}

/// Causal `softmax(q·kᵀ·scale)·v` with `groups` query heads per key/value head, heads merged,
/// in `precision` (float32, or the products in bfloat16/float16 as autocast runs SDPA), with
/// what its backward needs; `None` off LibTorch's CPU device or for tracked tensors.
///
/// # Shapes
/// - `q`: `[rows, heads, T, head_dim]`; `k`, `v`: `[rows, kv_heads, T, head_dim]`
/// - output: `[rows, T, heads * head_dim]` (float32)
pub(crate) fn causal_attention(
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    scale: f64,
    groups: usize,
    precision: MatmulPrecision,
) -> Option<(Tensor<3>, FusedAttention)> {
    #[cfg(feature = "tch")]
    {
        let (output, saved) = libtorch::forward(q, k, v, scale, groups, precision)?;
        Some((output, FusedAttention { saved }))
    }
    #[cfg(not(feature = "tch"))]
    {
        let _ = (q, k, v, scale, groups, precision);
        None
    }
}

// burn 0.22 marks its LibTorch backend deprecated; we keep it for CUDA and PyTorch's kernels, and
// this module is the one place besides device creation that names it.
#[cfg(feature = "tch")]
#[allow(deprecated)]
mod libtorch {
    use burn::backend::LibTorch;
    use burn::backend::libtorch::TchTensor;
    use burn::prelude::*;
    use tch::Kind;

    use crate::MatmulPrecision;

    fn to_tch<const D: usize>(tensor: Tensor<D>) -> Option<tch::Tensor> {
        let tensor = tensor.try_into_primitive::<LibTorch>().ok()?.tensor;
        (tensor.device() == tch::Device::Cpu).then_some(tensor)
    }

    fn from_tch<const D: usize>(tensor: tch::Tensor) -> Tensor<D> {
        Tensor::from_primitive::<LibTorch>(TchTensor::new(tensor))
    }

    pub(super) fn on_cpu(mask: &Tensor<2, Int>) -> bool {
        mask.clone()
            .try_into_primitive::<LibTorch>()
            .is_ok_and(|t| t.tensor.device() == tch::Device::Cpu)
    }

    pub(super) struct Saved {
        q: tch::Tensor,
        k: tch::Tensor,
        v: tch::Tensor,
        out: tch::Tensor,
        logsumexp: tch::Tensor,
        scale: f64,
        groups: i64,
        kind: Kind,
    }

    /// `[rows, kv_heads, T, d]` → `[rows, kv_heads * groups, T, d]` (transformers' `repeat_kv`).
    fn repeat_kv(x: &tch::Tensor, groups: i64) -> tch::Tensor {
        if groups == 1 {
            return x.shallow_clone();
        }
        let [b, h, t, d] = dims(x);
        x.unsqueeze(2)
            .expand([b, h, groups, t, d], false)
            .reshape([b, h * groups, t, d])
    }

    /// `x` in `kind`, in memory of its own: burn may update a tensor it holds the only handle
    /// on in place, so nothing handed to burn may share memory with what the backward keeps,
    /// and nothing kept may share memory with burn's tensors (a cast to the same kind would
    /// return the same memory).
    fn owned(x: tch::Tensor, kind: Kind) -> tch::Tensor {
        if x.kind() == kind {
            x.copy()
        } else {
            x.to_kind(kind)
        }
    }

    fn dims(x: &tch::Tensor) -> [i64; 4] {
        let s = x.size();
        [s[0], s[1], s[2], s[3]]
    }

    pub(super) fn forward(
        q: &Tensor<4>,
        k: &Tensor<4>,
        v: &Tensor<4>,
        scale: f64,
        groups: usize,
        precision: MatmulPrecision,
    ) -> Option<(Tensor<3>, Saved)> {
        let (q, k, v) = (to_tch(q.clone())?, to_tch(k.clone())?, to_tch(v.clone())?);
        let kind = q.kind();
        let low = match precision {
            MatmulPrecision::F32 => kind,
            MatmulPrecision::Bf16 => Kind::BFloat16,
            MatmulPrecision::F16 => Kind::Half,
        };
        let groups = groups as i64;
        let q = owned(q, low);
        let k = owned(repeat_kv(&k, groups), low);
        let v = owned(repeat_kv(&v, groups), low);
        let (out, logsumexp) = tch::Tensor::f_internal_scaled_dot_product_flash_attention_for_cpu(
            &q,
            &k,
            &v,
            0.0,
            true,
            None::<tch::Tensor>,
            scale,
        )
        .ok()?;
        let [b, h, t, d] = dims(&out);
        let merged = owned(out.transpose(1, 2).reshape([b, t, h * d]), kind);
        Some((
            from_tch(merged),
            Saved {
                q,
                k,
                v,
                out,
                logsumexp,
                scale,
                groups,
                kind,
            },
        ))
    }

    impl Saved {
        pub(super) fn backward(self, grad: Tensor<3>) -> Option<(Tensor<4>, Tensor<4>, Tensor<4>)> {
            let grad = to_tch(grad)?;
            let [b, h, t, d] = dims(&self.out);
            let grad = grad
                .reshape([b, t, h, d])
                .transpose(1, 2)
                .to_kind(self.out.kind());
            let (dq, dk, dv) =
                tch::Tensor::f_internal_scaled_dot_product_flash_attention_for_cpu_backward(
                    &grad,
                    &self.q,
                    &self.k,
                    &self.v,
                    &self.out,
                    &self.logsumexp,
                    0.0,
                    true,
                    None::<tch::Tensor>,
                    self.scale,
                )
                .ok()?;
            let kv_heads = h / self.groups;
            // A key/value head's gradient is the sum over the query heads it serves.
            let fold = |x: tch::Tensor| {
                let x = x.to_kind(Kind::Float);
                if self.groups == 1 {
                    x
                } else {
                    x.reshape([b, kv_heads, self.groups, t, d]).sum_dim_intlist(
                        2,
                        false,
                        Kind::Float,
                    )
                }
                .to_kind(self.kind)
            };
            Some((
                from_tch(dq.to_kind(self.kind)),
                from_tch(fold(dk)),
                from_tch(fold(dv)),
            ))
        }
    }
}
