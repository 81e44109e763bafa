//! The host attention kernel as an operation of burn's autodiff on flex: a tracked forward
//! records one node whose backward is the kernel's backward, so the whole-graph path (autodiff
//! through the forward, no checkpointing) keeps per layer the queries, keys, values, output and
//! log-sum-exp instead of the `[rows, heads, T, T]` probabilities, and computes exactly the bits
//! the untracked kernel computes (a frozen reference next to a tracked policy agrees with it).

use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{
    BalancedCheckpointing, CheckpointStrategy, NoCheckpointing,
};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, DispatchKindConversion, DispatchTensor, Flex};
use burn::prelude::*;

use super::LayerScoring;
use super::flex::{Saved, contiguous_f32, forward_host, host_f32, kernel_dims};
use super::visibility::HostMask;

/// Whether `tensor` lives on flex under autodiff (either checkpointing strategy).
pub(super) fn on_tracked_flex(tensor: &Tensor<2, Int>) -> bool {
    tensor
        .clone()
        .try_into_primitive::<Autodiff<Flex, NoCheckpointing>>()
        .is_ok()
        || tensor
            .clone()
            .try_into_primitive::<Autodiff<Flex, BalancedCheckpointing>>()
            .is_ok()
}

/// The tracked forward on flex under autodiff; `None` elsewhere, for products below float32 or
/// shapes the kernel does not take.
pub(super) fn forward(
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    layer: LayerScoring,
    mask: &Arc<HostMask>,
) -> Option<Tensor<3>> {
    forward_with::<NoCheckpointing>(q, k, v, layer, mask)
        .or_else(|| forward_with::<BalancedCheckpointing>(q, k, v, layer, mask))
}

fn forward_with<C: CheckpointStrategy>(
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    layer: LayerScoring,
    mask: &Arc<HostMask>,
) -> Option<Tensor<3>>
where
    DispatchTensor: DispatchKindConversion<Autodiff<Flex, C>>,
{
    let dims = kernel_dims((q, k, v), layer, mask)?;
    let tracked = |t: &Tensor<4>| t.clone().try_into_primitive::<Autodiff<Flex, C>>().ok();
    let (q, k, v) = (tracked(q)?, tracked(k)?, tracked(v)?);
    let inputs = (
        host_f32(q.primitive().clone())?,
        host_f32(k.primitive().clone())?,
        host_f32(v.primitive().clone())?,
    );
    let (output, saved) = forward_host(inputs, dims, layer, mask);
    let prepared = FusedAttentionOp
        .prepare::<C>([q.node(), k.node(), v.node()])
        .compute_bound()
        .stateful();
    let output = match prepared {
        OpsKind::Tracked(prep) => prep.finish(Arc::new(saved), output),
        OpsKind::UnTracked(prep) => prep.finish(output),
    };
    Some(Tensor::from_primitive::<Autodiff<Flex, C>>(output))
}

/// The autodiff node of the fused attention: its state is what the kernel's backward needs.
#[derive(Debug)]
struct FusedAttentionOp;

impl Backward<Flex, 3> for FusedAttentionOp {
    type State = Arc<Saved>;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        backward_on_host(ops, grads, |grad, saved| {
            let (dq, dk, dv) = saved.gradients(grad);
            [dq, dk, dv]
        });
    }
}

/// The backward of an autodiff operation computed on the host on flex: `gradients` maps the
/// output's gradient (contiguous float32) and the operation's state to its inputs' gradients,
/// which are registered for the inputs that need one.
pub(crate) fn backward_on_host<S, const N: usize>(
    ops: Ops<S, N>,
    grads: &mut Gradients,
    gradients: impl FnOnce(FlexTensor, &S) -> [FlexTensor; N],
) {
    let grad = contiguous_f32(grads.consume::<Flex>(&ops.node));
    for (parent, gradient) in ops.parents.iter().zip(gradients(grad, &ops.state)) {
        if let Some(node) = parent {
            grads.register::<Flex>(node.id, gradient);
        }
    }
}
