//! The forward pass composed from its pieces (`embed`, `layer_forward` with attention in query
//! blocks, `final_norm`, `lm_head`) gives the logits of `CausalLm::forward` on the four tiny
//! checkpoints, with padding, for every query block size from 1 to T; and the pieces compute
//! the same bits tracked and untracked.

mod common;

use burn::module::Module;
use burn::prelude::*;
use common::{TINY_MODELS, host, max_abs_diff_masked, model_dir};
use sdpo_models::CausalLm;

/// Two right-padded rows of 9 tokens (the second with 4 padding positions).
fn batch(device: &Device) -> (Tensor<2, Int>, Tensor<2, Int>, Vec<i64>) {
    let ids = vec![1i64, 5, 7, 9, 11, 13, 2, 17, 19, 3, 4, 8, 6, 10, 0, 0, 0, 0];
    let mask = vec![1i64, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0];
    (
        Tensor::from_data(TensorData::new(ids, [2, 9]), device),
        Tensor::from_data(TensorData::new(mask.clone(), [2, 9]), device),
        mask,
    )
}

fn pieces_logits(
    model: &CausalLm,
    ids: Tensor<2, Int>,
    mask: Tensor<2, Int>,
    block: usize,
) -> Tensor<3> {
    let ctx = model.stack_context(mask, block);
    let mut x = model.embed(ids);
    for layer in 0..model.num_layers() {
        x = model.layer_forward(layer, x, &ctx);
    }
    model.lm_head(model.final_norm(x))
}

#[test]
fn pieces_compose_to_the_forward_pass_for_every_query_block() {
    let mut checked = 0;
    for dev in sdpo_testkit::test_devices!() {
        for name in TINY_MODELS {
            let model = CausalLm::from_pretrained(model_dir(name), &dev.device).expect("load");
            let vocab = model.config().vocab_size;
            let (ids, mask, mask_host) = batch(&dev.device);
            let want = host(model.forward(ids.clone(), mask.clone()));
            for block in [1, 2, 4, 5, 9, usize::MAX] {
                let got = host(pieces_logits(&model, ids.clone(), mask.clone(), block));
                // Every position, padding included: a padded query attends to the earlier real
                // tokens in both, and no row starts with padding.
                let d = max_abs_diff_masked(&got, &want, &vec![1; mask_host.len()], vocab);
                assert!(
                    d <= 2e-5,
                    "[{}] {name} block {block}: logits differ by {d}",
                    dev.name
                );
                checked += 1;
            }
        }
        println!(
            "[{}] pieces == forward: {checked} (model, block) cases",
            dev.name
        );
    }
}

#[test]
fn pieces_give_the_same_bits_tracked_and_untracked() {
    for dev in sdpo_testkit::test_devices!() {
        let tracked_device = dev.device.clone().autodiff();
        for name in TINY_MODELS {
            let plain = CausalLm::from_pretrained(model_dir(name), &dev.device).expect("load");
            let policy = plain.clone().fork(&tracked_device).train();
            let (ids, mask, _) = batch(&dev.device);
            let untracked = host(pieces_logits(&plain, ids.clone(), mask.clone(), 4));
            let tracked = host(pieces_logits(&policy, ids, mask, 4).without_autodiff());
            let worst = untracked
                .iter()
                .zip(&tracked)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert_eq!(
                worst, 0.0,
                "[{}] {name}: tracked vs untracked differ by {worst:e}",
                dev.name
            );
        }
        println!(
            "[{}] tracked == untracked pieces for {} models",
            dev.name,
            TINY_MODELS.len()
        );
    }
}
