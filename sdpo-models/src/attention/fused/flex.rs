//! The host attention kernel ([`super::host`]) on burn's flex backend: flex tensors live in
//! host memory, so the kernel reads their float32 storage in place (after making a strided
//! view contiguous) and hands burn new tensors of its own.

use std::sync::Arc;

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::prelude::*;
use burn::tensor::DType;

use super::LayerScoring;
use super::host::{self, Dims, Scoring};
use super::visibility::{HostMask, Visibility};
use crate::MatmulPrecision;
use crate::stack::PackedRows;

/// Whether `tensor` lives on flex, untracked. Reads nothing.
pub(super) fn on_flex(tensor: &Tensor<2, Int>) -> bool {
    tensor.clone().try_into_primitive::<Flex>().is_ok()
}

/// The rows' masks on the host, or `None` when a value cannot be read.
pub(super) fn host_mask(
    attention_mask: &Tensor<2, Int>,
    packed: Option<&PackedRows>,
) -> Option<Arc<HostMask>> {
    let [_, seq] = attention_mask.dims();
    let ints = |t: &Tensor<2, Int>| -> Option<Vec<i64>> {
        t.clone()
            .into_data()
            .convert::<i64>()
            .try_into_vec::<i64>()
            .ok()
    };
    let mask = ints(attention_mask)?;
    let packed = match packed {
        None => None,
        Some(p) => Some((ints(&p.branches)?, ints(&p.position_ids)?)),
    };
    Some(HostMask::new(seq, &mask, packed))
}

/// A float32 flex tensor with contiguous storage (a view is copied), or `None` for another
/// backend, a tracked tensor or another dtype.
fn contiguous<const D: usize>(tensor: &Tensor<D>) -> Option<FlexTensor> {
    host_f32(tensor.clone().try_into_primitive::<Flex>().ok()?)
}

/// `tensor` with contiguous float32 storage (a view is copied), or `None` for another dtype.
pub(crate) fn host_f32(tensor: FlexTensor) -> Option<FlexTensor> {
    if tensor.dtype() != DType::F32 {
        return None;
    }
    let tensor = tensor.to_contiguous();
    tensor.as_slice::<f32>().is_some().then_some(tensor)
}

/// `tensor` with contiguous float32 storage, converted from another float dtype if need be.
pub(crate) fn contiguous_f32(tensor: FlexTensor) -> FlexTensor {
    host_f32(tensor.clone()).unwrap_or_else(|| {
        let shape = tensor.layout().shape().clone();
        let data = tensor.into_data().convert::<f32>();
        // A float tensor's data converts to float32 values; the fallback is never taken.
        let values = data.try_into_vec::<f32>().unwrap_or_default();
        FlexTensor::from_data(TensorData::new(values, shape))
    })
}

/// The values of a tensor made by [`host_f32`] or [`contiguous_f32`].
pub(crate) fn values(tensor: &FlexTensor) -> &[f32] {
    // Both made and checked this view.
    tensor.as_slice::<f32>().unwrap_or(&[])
}

fn flex_tensor<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// What the backward needs: the inputs (shared with burn's tensors, which therefore are never
/// updated in place), the output, the log-sum-exp and the layer's masks.
#[derive(Debug)]
pub(super) struct Saved {
    q: FlexTensor,
    k: FlexTensor,
    v: FlexTensor,
    output: FlexTensor,
    logsumexp: Vec<f32>,
    dims: Dims,
    scoring: Scoring,
    mask: Arc<HostMask>,
    window: Option<usize>,
}

/// The dimensions of one call when the kernel runs it: float32 products, and `q`, `k`, `v` of
/// the shapes the kernel takes, agreeing with the layer's `groups` and the mask.
pub(super) fn kernel_dims(
    (q, k, v): (&Tensor<4>, &Tensor<4>, &Tensor<4>),
    layer: LayerScoring,
    mask: &HostMask,
) -> Option<Dims> {
    if layer.precision != MatmulPrecision::F32 {
        return None;
    }
    let [rows, heads, seq, head_dim] = q.dims();
    let [k_rows, kv_heads, k_seq, k_dim] = k.dims();
    let agree = [k_rows, k_seq, k_dim] == [rows, seq, head_dim]
        && v.dims() == k.dims()
        && kv_heads > 0
        && heads == kv_heads * layer.groups
        && mask.len() == rows * seq;
    agree.then_some(Dims {
        rows,
        heads,
        kv_heads,
        seq,
        head_dim,
    })
}

/// The kernel's forward on host tensors (contiguous float32, see [`host_f32`]): the merged
/// output `[rows, T, heads * head_dim]` and what the backward needs.
pub(super) fn forward_host(
    (q, k, v): (FlexTensor, FlexTensor, FlexTensor),
    dims: Dims,
    layer: LayerScoring,
    mask: &Arc<HostMask>,
) -> (FlexTensor, Saved) {
    let scoring = Scoring {
        scale: layer.scale as f32,
        softcap: layer.softcap.map(|cap| cap as f32),
    };
    let visibility = Visibility::new(mask, layer.window);
    let host::Forward { output, logsumexp } = host::forward(
        values(&q),
        values(&k),
        values(&v),
        dims,
        scoring,
        &visibility,
    );
    let output = flex_tensor(output, [dims.rows, dims.seq, dims.heads * dims.head_dim]);
    let saved = Saved {
        q,
        k,
        v,
        output: output.clone(),
        logsumexp,
        dims,
        scoring,
        mask: Arc::clone(mask),
        window: layer.window,
    };
    (output, saved)
}

/// The untracked forward on flex; `None` off flex, for tracked tensors, for products below
/// float32 or shapes the kernel does not take.
pub(super) fn forward(
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    layer: LayerScoring,
    mask: &Arc<HostMask>,
) -> Option<(Tensor<3>, Saved)> {
    let dims = kernel_dims((q, k, v), layer, mask)?;
    let inputs = (contiguous(q)?, contiguous(k)?, contiguous(v)?);
    let (output, saved) = forward_host(inputs, dims, layer, mask);
    Some((Tensor::from_primitive::<Flex>(output), saved))
}

impl Saved {
    /// The gradients of the queries, keys and values from `grad`, the gradient of the merged
    /// output (`[rows, T, heads * head_dim]`, any float dtype).
    pub(super) fn gradients(&self, grad: FlexTensor) -> (FlexTensor, FlexTensor, FlexTensor) {
        let Dims {
            rows,
            heads,
            kv_heads,
            seq,
            head_dim,
        } = self.dims;
        let grad = contiguous_f32(grad);
        let visibility = Visibility::new(&self.mask, self.window);
        let (dq, dk, dv) = host::backward(
            values(&self.q),
            values(&self.k),
            values(&self.v),
            values(&self.output),
            &self.logsumexp,
            values(&grad),
            self.dims,
            self.scoring,
            &visibility,
        );
        (
            flex_tensor(dq, [rows, heads, seq, head_dim]),
            flex_tensor(dk, [rows, kv_heads, seq, head_dim]),
            flex_tensor(dv, [rows, kv_heads, seq, head_dim]),
        )
    }

    pub(super) fn backward(self, grad: Tensor<3>) -> Option<(Tensor<4>, Tensor<4>, Tensor<4>)> {
        let Dims {
            rows,
            heads,
            seq,
            head_dim,
            ..
        } = self.dims;
        if grad.dims() != [rows, seq, heads * head_dim] {
            return None;
        }
        let grad = grad.try_into_primitive::<Flex>().ok()?;
        let (dq, dk, dv) = self.gradients(grad);
        Some((
            Tensor::from_primitive::<Flex>(dq),
            Tensor::from_primitive::<Flex>(dk),
            Tensor::from_primitive::<Flex>(dv),
        ))
    }
}
