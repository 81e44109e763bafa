//! The stable `log_sigmoid` and `softplus` have the derivatives of the functions they compute,
//! also at `x = 0`, where a clamp-based `min(x, 0)` passes its whole gradient: the derivative of
//! `log(sigmoid(x))` is `sigmoid(-x)` and that of `log(1 + exp(x))` is `sigmoid(x)`, so both are
//! exactly 1/2 at 0 (what PyTorch's `logsigmoid` and `softplus` give). Every DPO pair whose
//! policy and reference agree (every pair of a run's first step) has logit 0.

use burn::tensor::{Tensor, TensorData};
use sdpo_core::numerics::{log_sigmoid, softplus};
use sdpo_testkit::{Tolerance, assert_close};

const XS: [f32; 7] = [0.0, -0.0, 1e-7, -1e-7, 2.5, -3.0, 40.0];

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn gradient(f: fn(Tensor<1>) -> Tensor<1>, device: &burn::tensor::Device) -> Vec<f32> {
    let x = Tensor::<1>::from_data(TensorData::new(XS.to_vec(), [XS.len()]), device).require_grad();
    let grads = f(x.clone()).sum().backward();
    x.grad(&grads)
        .expect("a gradient")
        .try_into_vec_as::<f32>()
        .expect("read back")
}

#[test]
fn log_sigmoid_and_softplus_have_their_derivatives_at_zero_too() {
    for dev in sdpo_testkit::test_devices!() {
        let device = dev.device.clone().autodiff();
        let expected_ls: Vec<f32> = XS.iter().map(|&x| sigmoid(-x as f64) as f32).collect();
        let expected_sp: Vec<f32> = XS.iter().map(|&x| sigmoid(x as f64) as f32).collect();
        let tol = Tolerance::elementwise(1e-7, 1e-6);
        assert_close(
            &gradient(log_sigmoid, &device),
            &expected_ls,
            tol,
            &format!("[{}] d/dx log_sigmoid", dev.name),
        );
        assert_close(
            &gradient(softplus, &device),
            &expected_sp,
            tol,
            &format!("[{}] d/dx softplus", dev.name),
        );
    }
}
