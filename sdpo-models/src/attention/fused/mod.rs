//! Fused attention: one forward that never builds the `[rows, heads, T, T]` scores (it works in
//! tiles, skips the tiles above the diagonal and keeps only each query's log-sum-exp) and one
//! backward that recomputes the tiles from that log-sum-exp, so a layer's attention costs one
//! forward and one backward instead of the blocked forward, a tracked re-forward and
//! autodiff's backward.
//!
//! Two kernels:
//! - **flex** ([`host`]): a flash-style kernel on the host for burn's CPU backend, with every
//!   mask the blocked attention has (causal, key padding anywhere, packed branches, sliding
//!   windows) and soft-capping, in float32;
//! - **LibTorch's CPU device** ([`libtorch`]): PyTorch's flash-attention kernels, the ones TRL's
//!   `DPOTrainer` runs; they take no padding mask, so they run only for plain rows whose real
//!   tokens are a prefix of the row (right padding), where the causal mask alone hides every
//!   padded key from every real query, on full-attention layers without soft-capping (in
//!   bfloat16/float16 products as autocast runs SDPA, or float32).
//!
//! Either computes what the blocked attention computes for every position a loss reads, to
//! float rounding. Padded query positions may differ: no loss reads them and they feed only
//! later padded positions, hidden as keys from every real query.
//!
//! Both run on untracked tensors (the engine's passes), the flex kernel also as an operation
//! of burn's autodiff ([`tracked`]: the whole-graph path); on any other backend or device
//! (wgpu, LibTorch on CUDA), and for tracked tensors on LibTorch, the functions return `None`
//! and the caller runs the blocked attention.

use std::sync::Arc;

use burn::prelude::*;

use crate::MatmulPrecision;
use crate::stack::PackedRows;

pub(crate) mod flex;
mod host;
#[cfg(feature = "tch")]
mod libtorch;
pub(crate) mod tracked;
mod visibility;

use visibility::HostMask;

/// What a fused attention forward keeps for its backward: the queries, keys, values, output
/// and the per-query log-sum-exp.
pub struct FusedAttention {
    saved: Saved,
}

enum Saved {
    Flex(flex::Saved),
    #[cfg(feature = "tch")]
    LibTorch(libtorch::Saved),
}

impl std::fmt::Debug for FusedAttention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.saved {
            Saved::Flex(_) => "FusedAttention(flex)",
            #[cfg(feature = "tch")]
            Saved::LibTorch(_) => "FusedAttention(libtorch)",
        })
    }
}

impl FusedAttention {
    /// The gradients of the queries, keys and values from the gradient of the attention's
    /// merged output, or `None` when `grad` is not on the forward's backend (untracked).
    ///
    /// # Shapes
    /// - `grad`: `[rows, T, heads * head_dim]`
    /// - output: `dq` `[rows, heads, T, head_dim]`, `dk`, `dv` `[rows, kv_heads, T, head_dim]`
    pub fn backward(self, grad: Tensor<3>) -> Option<(Tensor<4>, Tensor<4>, Tensor<4>)> {
        match self.saved {
            Saved::Flex(saved) => saved.backward(grad),
            #[cfg(feature = "tch")]
            Saved::LibTorch(saved) => saved.backward(grad),
        }
    }
}

/// The fused kernel a stack context's attention may run, chosen once for all its layers.
#[derive(Debug, Clone)]
pub(crate) enum FusedKernel {
    /// The host kernel on flex, with the rows' masks read once.
    Flex(Arc<HostMask>),
    /// PyTorch's kernels on LibTorch's CPU device (plain right-padded rows).
    #[cfg(feature = "tch")]
    LibTorch,
}

impl FusedKernel {
    /// The kernel for rows with `attention_mask` (`[rows, T]`) and `packed` on the mask's
    /// device, if it has one that computes these rows exactly.
    pub(crate) fn for_rows(
        attention_mask: &Tensor<2, Int>,
        packed: Option<&PackedRows>,
    ) -> Option<Self> {
        if flex::on_flex(attention_mask) || tracked::on_tracked_flex(attention_mask) {
            return flex::host_mask(attention_mask, packed).map(Self::Flex);
        }
        #[cfg(feature = "tch")]
        if packed.is_none() && libtorch::runs_on(attention_mask) {
            return Some(Self::LibTorch);
        }
        None
    }
}

/// How one layer's attention scores: the scale, grouped key/value heads, the products'
/// precision, the sliding window and the soft-capping.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LayerScoring {
    pub scale: f64,
    pub groups: usize,
    pub precision: MatmulPrecision,
    pub window: Option<usize>,
    pub softcap: Option<f64>,
}

/// `softmax(q·kᵀ·scale)·v` with `groups` query heads per key/value head, heads merged, as the
/// blocked attention computes it for the rows `kernel` was chosen for: on untracked tensors
/// with what its backward needs, on tracked tensors (flex under autodiff) recorded in their
/// graph (no state returned); `None` where the kernel cannot run this layer (LibTorch: a
/// window, soft-capping or tracked tensors; flex: products below float32).
///
/// # Shapes
/// - `q`: `[rows, heads, T, head_dim]`; `k`, `v`: `[rows, kv_heads, T, head_dim]`
/// - output: `[rows, T, heads * head_dim]` (float32)
pub(crate) fn attention(
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    layer: LayerScoring,
    kernel: &FusedKernel,
) -> Option<(Tensor<3>, Option<FusedAttention>)> {
    match kernel {
        FusedKernel::Flex(mask) => match flex::forward(q, k, v, layer, mask) {
            Some((output, saved)) => Some((
                output,
                Some(FusedAttention {
                    saved: Saved::Flex(saved),
                }),
            )),
            None => tracked::forward(q, k, v, layer, mask).map(|output| (output, None)),
        },
        #[cfg(feature = "tch")]
        FusedKernel::LibTorch => {
            if layer.window.is_some() || layer.softcap.is_some() {
                return None;
            }
            let (output, saved) =
                libtorch::forward(q, k, v, layer.scale, layer.groups, layer.precision)?;
            Some((
                output,
                Some(FusedAttention {
                    saved: Saved::LibTorch(saved),
                }),
            ))
        }
    }
}

/// A short name for the fused kernels sdpo-models runs on `device`, for keys of cached results
/// that must have been computed the same way: `flex-fused/1` (flex: the host attention kernel
/// and the gated SiLU), `libtorch-fused/1` (LibTorch's CPU device: PyTorch's flash attention for
/// plain right-padded rows), `blocked` (wgpu, LibTorch on CUDA: burn's operations only). The
/// number changes when a kernel's arithmetic does.
pub fn kernel_set(device: &Device) -> &'static str {
    // The kernels of the plain device: an autodiff device runs the same ones.
    let mask = Tensor::<2, Int>::ones([1, 1], device).without_autodiff();
    match FusedKernel::for_rows(&mask, None) {
        Some(FusedKernel::Flex(_)) => "flex-fused/1",
        #[cfg(feature = "tch")]
        Some(FusedKernel::LibTorch) => "libtorch-fused/1",
        None => "blocked",
    }
}
