//! The policy runs with gradients tracked, the frozen reference without. When the reference is
//! the initial policy, SDPO's scores `ref - policy` must be exactly 0 at the first step, so the
//! two paths must compute the same bits (burn's fused softmax / layer norm kernels differ from
//! their autodiff compositions by an ulp; the models avoid them).

use burn::module::Module;
use burn::tensor::{Int, Tensor, TensorData};
use sdpo_models::CausalLm;
use sdpo_testkit::{Tolerance, assert_close};

#[test]
fn tracked_and_untracked_forward_passes_agree_bit_for_bit() {
    for dev in sdpo_testkit::test_devices!() {
        let tracked_device = dev.device.clone().autodiff();
        let models = sdpo_testkit::fixture_model_names();
        for name in &models {
            let dir = sdpo_testkit::fixtures_dir().join("models").join(name);
            let plain = CausalLm::from_pretrained(&dir, &dev.device).unwrap();
            let policy = plain.clone().fork(&tracked_device).train();
            let ids = Tensor::<2, Int>::from_data(
                TensorData::new(
                    vec![1i64, 5, 7, 9, 11, 13, 2, 0, 3, 4, 8, 6, 0, 0, 0, 0],
                    [2, 8],
                ),
                &dev.device,
            );
            let mask = Tensor::<2, Int>::from_data(
                TensorData::new(
                    vec![1i64, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 0, 0, 0, 0],
                    [2, 8],
                ),
                &dev.device,
            );
            let untracked = plain
                .forward(ids.clone(), mask.clone())
                .try_into_vec_as::<f32>()
                .unwrap();
            let tracked = policy
                .forward(ids, mask)
                .without_autodiff()
                .try_into_vec_as::<f32>()
                .unwrap();
            assert_close(
                &tracked,
                &untracked,
                Tolerance::EXACT,
                &format!("[{}] {name}: tracked vs untracked logits", dev.name),
            );
        }
        println!(
            "[{}] tracked == untracked for {} models",
            dev.name,
            models.len()
        );
    }
}
