//! What runs differently when the tensors live on LibTorch (the `tch` feature): AdamW's update
//! of a bfloat16 or float16 parameter as LibTorch's own in-place operators (burn's out-of-place
//! operations cost many passes over memory), and whether a tensor is there at all (a linear
//! layer's product takes another shape there, [`crate::MatmulPrecision::linear`]).
//!
//! Each update hands its tensors back untouched (`Err`) when they are not LibTorch tensors, and
//! the caller runs its portable path.

use burn::prelude::*;

/// Whether `tensor` (tracked or not) lives on LibTorch. Reads nothing from the device.
pub(crate) fn holds<const D: usize>(tensor: &Tensor<D>) -> bool {
    #[cfg(feature = "tch")]
    {
        imp::holds(tensor)
    }
    #[cfg(not(feature = "tch"))]
    {
        let _ = tensor;
        false
    }
}

/// One AdamW update of a bfloat16/float16 parameter, as PyTorch's fused CPU kernel computes it:
/// parameter, gradient and moments widened to float32, then
/// `p ← p·decay`, `m ← m + (1 − β1)·(g − m)`, `v ← β2·v + (1 − β2)·g²`,
/// `p ← p − step_size·m / (√v / bias_correction2_sqrt + ε)`, each rounded back once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LowPrecisionAdamW {
    /// β1.
    pub beta_1: f64,
    /// β2.
    pub beta_2: f64,
    /// ε.
    pub epsilon: f64,
    /// `lr / (1 − β1ᵗ)`.
    pub step_size: f64,
    /// `√(1 − β2ᵗ)`.
    pub bias_correction2_sqrt: f64,
    /// `1 − lr·weight_decay`; `None` without weight decay.
    pub decay: Option<f64>,
}

/// The parameter, first and second moment after an update.
pub type AdamWOutput<const D: usize> = (Tensor<D>, Tensor<D>, Tensor<D>);

/// What [`LowPrecisionAdamW::update_in_place`] hands back when the tensors are not on
/// LibTorch: the parameter, its gradient and its moments, untouched.
pub type AdamWInputs<const D: usize> = (Tensor<D>, Tensor<D>, Option<(Tensor<D>, Tensor<D>)>);

impl LowPrecisionAdamW {
    /// The update of `param` (bfloat16/float16) with `grad` and the moments `(m, v)` (the
    /// parameter's dtype and shape; zeros when `None`, the first step), in place on LibTorch:
    /// `slice_values` values at a time are widened to float32, updated with LibTorch's in-place
    /// operators and written back into the parameter's and moments' own memory, so no
    /// full-size temporary exists and each value is read and written once per operator in
    /// cache-sized pieces. A tensor whose memory burn shares with another handle (the initial
    /// policy's weights, shared with a live reference) is copied first. `Err` hands the
    /// tensors back when they are not on LibTorch.
    pub fn update_in_place<const D: usize>(
        &self,
        param: Tensor<D>,
        grad: Tensor<D>,
        moments: Option<(Tensor<D>, Tensor<D>)>,
        slice_values: usize,
    ) -> Result<AdamWOutput<D>, Box<AdamWInputs<D>>> {
        #[cfg(feature = "tch")]
        {
            imp::update_in_place(self, param, grad, moments, slice_values)
        }
        #[cfg(not(feature = "tch"))]
        {
            let _ = slice_values;
            Err(Box::new((param, grad, moments)))
        }
    }
}

// burn 0.22 marks its LibTorch backend deprecated; we keep it for CUDA and PyTorch's kernels.
// This module and the fused attention's are the places besides device creation that name it.
#[cfg(feature = "tch")]
#[allow(deprecated)]
mod imp {
    use burn::backend::LibTorch;
    use burn::backend::libtorch::TchTensor;
    use burn::prelude::*;
    use tch::Kind;

    use super::{AdamWInputs, AdamWOutput, LowPrecisionAdamW};

    fn on_libtorch<const D: usize>(tensor: &Tensor<D>) -> bool {
        tensor.clone().try_into_primitive::<LibTorch>().is_ok()
    }

    pub(super) fn holds<const D: usize>(tensor: &Tensor<D>) -> bool {
        on_libtorch(&tensor.clone().without_autodiff())
    }

    /// The tensor's LibTorch handle, with memory no other burn handle shares (copied when it
    /// does), contiguous.
    fn exclusive<const D: usize>(tensor: Tensor<D>) -> Option<tch::Tensor> {
        let primitive: TchTensor = tensor.try_into_primitive::<LibTorch>().ok()?;
        let exclusive = primitive.can_mut() && primitive.tensor.is_contiguous();
        Some(if exclusive {
            primitive.tensor
        } else {
            primitive.tensor.contiguous().copy()
        })
    }

    fn readable<const D: usize>(tensor: Tensor<D>) -> Option<tch::Tensor> {
        Some(tensor.try_into_primitive::<LibTorch>().ok()?.tensor)
    }

    fn from_tch<const D: usize>(tensor: tch::Tensor) -> Tensor<D> {
        Tensor::from_primitive::<LibTorch>(TchTensor::new(tensor))
    }

    pub(super) fn update_in_place<const D: usize>(
        update: &LowPrecisionAdamW,
        param: Tensor<D>,
        grad: Tensor<D>,
        moments: Option<(Tensor<D>, Tensor<D>)>,
        slice_values: usize,
    ) -> Result<AdamWOutput<D>, Box<AdamWInputs<D>>> {
        let moments_there = moments.as_ref().is_none_or(|(m, v)| {
            on_libtorch(m)
                && on_libtorch(v)
                && m.dtype() == param.dtype()
                && v.dtype() == param.dtype()
        });
        if !(on_libtorch(&param) && on_libtorch(&grad) && moments_there) {
            return Err(Box::new((param, grad, moments)));
        }
        let converted = (|| {
            let p = exclusive(param)?;
            let (m, v) = match moments {
                Some((m, v)) => (exclusive(m)?, exclusive(v)?),
                None => (p.zeros_like(), p.zeros_like()),
            };
            Some((p, readable(grad)?, m, v))
        })();
        // Every check above passed, so each conversion does.
        let (p, g, m, v) = converted.expect("LibTorch tensors convert to LibTorch primitives");
        step(update, &p, &g, &m, &v, slice_values as i64);
        Ok((from_tch(p), from_tch(m), from_tch(v)))
    }

    /// The update over flat slices of `slice` values; `p`, `m`, `v` are written in place.
    fn step(
        u: &LowPrecisionAdamW,
        p: &tch::Tensor,
        g: &tch::Tensor,
        m: &tch::Tensor,
        v: &tch::Tensor,
        slice: i64,
    ) {
        let flat = |t: &tch::Tensor| t.view([-1]);
        let (p, g, m, v) = (flat(p), g.reshape([-1]), flat(m), flat(v));
        let n = p.numel() as i64;
        let mut start = 0;
        while start < n {
            let len = slice.max(1).min(n - start);
            let piece = |t: &tch::Tensor| t.narrow(0, start, len);
            let wide = |t: &tch::Tensor| piece(t).to_kind(Kind::Float);
            let (mut pw, gw, mut mw, mut vw) = (wide(&p), wide(&g), wide(&m), wide(&v));
            if let Some(decay) = u.decay {
                let _ = pw.g_mul_scalar_(decay);
            }
            // `exp_avg.lerp_(grad, 1 − β1)`: m + (1 − β1)·(g − m).
            let mut delta = &gw - &mw;
            let _ = delta.g_mul_scalar_(1.0 - u.beta_1);
            let _ = mw.g_add_(&delta);
            let _ = vw.g_mul_scalar_(u.beta_2);
            let mut square = gw.square();
            let _ = square.g_mul_scalar_(1.0 - u.beta_2);
            let _ = vw.g_add_(&square);
            let mut denominator = vw.sqrt();
            let _ = denominator.g_div_scalar_(u.bias_correction2_sqrt);
            let _ = denominator.g_add_scalar_(u.epsilon);
            let mut step = &mw * u.step_size;
            let _ = step.g_div_(&denominator);
            let _ = pw.g_sub_(&step);
            piece(&p).copy_(&pw);
            piece(&m).copy_(&mw);
            piece(&v).copy_(&vw);
            start += len;
        }
    }
}
