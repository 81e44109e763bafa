//! The gated SiLU of the MLP, `silu(gate) * up`, as one vectorized pass on flex, untracked and
//! as an operation of burn's autodiff, instead of burn's sigmoid, two products and their
//! autodiff nodes (each a pass over `[rows, T, intermediate]` and a fresh tensor). Tracked and
//! untracked runs compute the same bits, so a frozen reference still agrees with the policy.
//! Elsewhere (wgpu, LibTorch, other dtypes) burn's operations run.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{
    BalancedCheckpointing, CheckpointStrategy, NoCheckpointing,
};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, DispatchKindConversion, DispatchTensor, Flex};
use burn::prelude::*;
use burn::tensor::activation::silu;
use rayon::prelude::*;

use crate::attention::fused::flex::{host_f32, values};
use crate::attention::fused::tracked::backward_on_host;
use crate::vector;

/// Elements per parallel task.
const CHUNK: usize = 1 << 14;

/// `silu(gate) * up` element by element.
///
/// # Shapes
/// - `gate`, `up`: `[rows, T, intermediate]`; output the same
pub(crate) fn silu_gate(gate: Tensor<3>, up: Tensor<3>) -> Tensor<3> {
    if gate.dims() == up.dims() {
        let fused = untracked(&gate, &up)
            .or_else(|| tracked::<NoCheckpointing>(&gate, &up))
            .or_else(|| tracked::<BalancedCheckpointing>(&gate, &up));
        if let Some(output) = fused {
            return output;
        }
    }
    silu(gate) * up
}

fn forward_host(gate: &FlexTensor, up: &FlexTensor) -> FlexTensor {
    let (g, u) = (values(gate), values(up));
    let mut out = vec![0.0f32; g.len()];
    out.par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK).zip(u.par_chunks(CHUNK)))
        .for_each(|(out, (g, u))| vector::silu_gate(g, u, out));
    FlexTensor::from_data(TensorData::new(out, gate.layout().shape().clone()))
}

fn untracked(gate: &Tensor<3>, up: &Tensor<3>) -> Option<Tensor<3>> {
    let host = |t: &Tensor<3>| host_f32(t.clone().try_into_primitive::<Flex>().ok()?);
    let (gate, up) = (host(gate)?, host(up)?);
    Some(Tensor::from_primitive::<Flex>(forward_host(&gate, &up)))
}

fn tracked<C: CheckpointStrategy>(gate: &Tensor<3>, up: &Tensor<3>) -> Option<Tensor<3>>
where
    DispatchTensor: DispatchKindConversion<Autodiff<Flex, C>>,
{
    let gate = gate
        .clone()
        .try_into_primitive::<Autodiff<Flex, C>>()
        .ok()?;
    let up = up.clone().try_into_primitive::<Autodiff<Flex, C>>().ok()?;
    let (g, u) = (
        host_f32(gate.primitive().clone())?,
        host_f32(up.primitive().clone())?,
    );
    let output = forward_host(&g, &u);
    let prepared = GatedSilu
        .prepare::<C>([gate.node(), up.node()])
        .compute_bound()
        .stateful();
    let output = match prepared {
        OpsKind::Tracked(prep) => prep.finish((g, u), output),
        OpsKind::UnTracked(prep) => prep.finish(output),
    };
    Some(Tensor::from_primitive::<Autodiff<Flex, C>>(output))
}

/// The autodiff node of the gated SiLU: its state is the gate and up projections.
#[derive(Debug)]
struct GatedSilu;

impl Backward<Flex, 2> for GatedSilu {
    type State = (FlexTensor, FlexTensor);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        backward_on_host(ops, grads, |grad, (gate, up)| {
            let (g, u, d) = (values(gate), values(up), values(&grad));
            let mut dg = vec![0.0f32; g.len()];
            let mut du = vec![0.0f32; g.len()];
            dg.par_chunks_mut(CHUNK)
                .zip(du.par_chunks_mut(CHUNK))
                .zip(
                    g.par_chunks(CHUNK)
                        .zip(u.par_chunks(CHUNK))
                        .zip(d.par_chunks(CHUNK)),
                )
                .for_each(|((dg, du), ((g, u), d))| vector::silu_gate_backward((g, u, d), dg, du));
            let shape = gate.layout().shape().clone();
            [dg, du].map(|v| FlexTensor::from_data(TensorData::new(v, shape.clone())))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(t: Tensor<3>) -> Vec<f32> {
        t.into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("f32")
    }

    fn inputs(device: &Device) -> (Tensor<3>, Tensor<3>) {
        let n = 2 * 3 * 7;
        let g: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 9.0).collect();
        let u: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos() * 2.0).collect();
        (
            Tensor::from_data(TensorData::new(g, [2, 3, 7]), device),
            Tensor::from_data(TensorData::new(u, [2, 3, 7]), device),
        )
    }

    #[test]
    fn fused_on_flex_matches_burns_operations_tracked_and_untracked() {
        let plain = Device::flex();
        let (g, u) = inputs(&plain);
        let fused = host(silu_gate(g.clone(), u.clone()));
        let want = host(silu(g.clone()) * u.clone());
        for (a, b) in fused.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{a} vs {b}");
        }

        let tracked = plain.autodiff();
        let leaf = |t: &Tensor<3>| Tensor::<3>::from_data(t.to_data(), &tracked).require_grad();
        let seed: Tensor<3> = Tensor::from_data(u.to_data(), &tracked) * 0.5 - 0.25;
        let (g1, u1) = (leaf(&g), leaf(&u));
        let out = silu_gate(g1.clone(), u1.clone());
        // Tracked, the fused kernel runs (the same bits as untracked).
        assert_eq!(host(out.clone().detach().without_autodiff()), fused);
        let grads = (out * seed.clone()).sum().backward();
        let (g2, u2) = (leaf(&g), leaf(&u));
        let reference = (silu(g2.clone()) * u2.clone() * seed).sum().backward();
        for (got, want) in [(&g1, &g2), (&u1, &u2)] {
            let got = host(got.grad(&grads).expect("gradient"));
            let want = host(want.grad(&reference).expect("gradient"));
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
            }
        }
    }
}
