//! PyTorch's flash-attention kernels on LibTorch's CPU device
//! (`_scaled_dot_product_flash_attention_for_cpu` and its backward), the kernels TRL's
//! `DPOTrainer` runs through `torch.nn.functional.scaled_dot_product_attention`.
//!
//! They take no padding mask: used only for plain rows whose real tokens are a prefix of the row
//! (right padding), where the causal mask alone hides every padded key from every real query,
//! and for full-attention layers without soft-capping.
// burn 0.22 marks its LibTorch backend deprecated; we keep it for CUDA and PyTorch's kernels, and
// this module is the one place besides device creation that names it.
#![allow(deprecated)]

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

/// Whether `mask` lives on LibTorch's CPU device and its rows' real tokens lead (right
/// padding): where the kernels compute what the blocked attention computes.
pub(super) fn runs_on(mask: &Tensor<2, Int>) -> bool {
    let on_cpu = mask
        .clone()
        .try_into_primitive::<LibTorch>()
        .is_ok_and(|t| t.tensor.device() == tch::Device::Cpu);
    on_cpu && real_tokens_lead(mask)
}

/// Whether every row of `[rows, T]` is real tokens followed by padding.
fn real_tokens_lead(attention_mask: &Tensor<2, Int>) -> bool {
    let [_, seq] = attention_mask.dims();
    let Ok(values) = attention_mask
        .clone()
        .into_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
    else {
        return false;
    };
    values
        .chunks(seq.max(1))
        .all(|row| row.windows(2).all(|w| w[0] != 0 || w[1] == 0))
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
                x.reshape([b, kv_heads, self.groups, t, d])
                    .sum_dim_intlist(2, false, Kind::Float)
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
