//! Mixed precision: matrix products in bfloat16/float16 ([`MatmulPrecision`]) and matrices
//! stored in a low-precision dtype ([`store_matrices_as`], the reference's `ref_dtype`).

mod common;

use std::collections::BTreeMap;

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::FloatDType;
use common::{
    Golden, RawTensor, copy_model, golden_logits_of, model_dir, read_raw, tiny_models, write_raw,
};
use sdpo_models::{CausalLm, MatmulPrecision, store_matrices_as};
use sdpo_testkit::max_abs_diff;

/// Largest |logit| error of bfloat16 products against the float32 golden, relative to the
/// largest |golden logit| (bfloat16 keeps 8 significant bits).
const BF16_LOGITS_TOLERANCE: f64 = 3e-2;
/// The same for float16 products (11 significant bits).
const F16_LOGITS_TOLERANCE: f64 = 5e-3;

/// Counts the float parameters by dimension count and dtype.
#[derive(Default)]
struct DtypeCount(BTreeMap<(usize, String), usize>);

impl ModuleVisitor for DtypeCount {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let dtype = format!("{:?}", param.val().dtype());
        *self.0.entry((D, dtype)).or_default() += 1;
    }
}

/// A model stored with `store_matrices_as` computes exactly what the float32 model with the
/// same rounded matrices computes (vectors untouched), and holds its matrices in the dtype.
#[test]
fn matrices_stored_in_low_precision_compute_as_their_rounded_values() {
    type Round = fn(f32) -> f32;
    let bf16: Round = |x| half::bf16::from_f32(x).to_f32();
    let f16: Round = |x| half::f16::from_f32(x).to_f32();
    for dev in sdpo_testkit::test_devices!() {
        for (dtype, round) in [(FloatDType::BF16, bf16), (FloatDType::F16, f16)] {
            if !dev.device.supports_dtype(dtype) {
                println!("[{}] skipped {dtype:?}: not on this backend", dev.name);
                continue;
            }
            for name in &tiny_models() {
                // The float32 file with every matrix rounded on the host.
                let rounded_dir = copy_model(name);
                let path = rounded_dir.path().join("model.safetensors");
                let mut tensors = read_raw(&path);
                for t in tensors.values_mut() {
                    if t.shape.len() >= 2 {
                        t.data = t
                            .data
                            .chunks_exact(4)
                            .flat_map(|c| {
                                round(f32::from_le_bytes([c[0], c[1], c[2], c[3]])).to_le_bytes()
                            })
                            .collect();
                    }
                }
                let tensors: BTreeMap<String, RawTensor> = tensors;
                write_raw(&path, &tensors);
                let rounded = CausalLm::from_pretrained(rounded_dir.path(), &dev.device).unwrap();
                let stored = store_matrices_as(
                    CausalLm::from_pretrained(model_dir(name), &dev.device).unwrap(),
                    dtype,
                );

                let mut count = DtypeCount::default();
                stored.visit(&mut count);
                let low = format!("{dtype:?}");
                for ((dims, got), n) in &count.0 {
                    let want = if *dims >= 2 { low.as_str() } else { "F32" };
                    assert_eq!(got, want, "{name}: {n} parameters of {dims} dims");
                }

                let a = golden_logits_of(&stored, name, &dev.device);
                let b = golden_logits_of(&rounded, name, &dev.device);
                assert_eq!(max_abs_diff(&a, &b), 0.0, "[{}] {name} {dtype:?}", dev.name);
                let golden = Golden::open(&model_dir(name).join("golden.safetensors"));
                let moved = max_abs_diff(&a, &golden.f32("logits").0);
                assert!(moved > 0.0, "{name} {dtype:?}: rounding had no effect");
                println!(
                    "[{}] {name} {dtype:?} storage = rounded float32 (|Δ golden| {moved:.2e})",
                    dev.name
                );
            }
        }
    }
}

/// Products in bfloat16/float16 keep the logits within the stated tolerance of the float32
/// goldens, and do round (the logits move); float32 precision is the plain forward, bit for bit.
#[test]
fn low_precision_products_stay_near_the_float32_goldens() {
    for dev in sdpo_testkit::test_devices!() {
        for name in &tiny_models() {
            let model = CausalLm::from_pretrained(model_dir(name), &dev.device).unwrap();
            let golden = Golden::open(&model_dir(name).join("golden.safetensors"));
            let want = golden.f32("logits").0;
            let plain = golden_logits_of(&model, name, &dev.device);
            let same = golden_logits_of(
                &model.clone().with_matmul_precision(MatmulPrecision::F32),
                name,
                &dev.device,
            );
            assert_eq!(max_abs_diff(&plain, &same), 0.0, "{name}: F32 precision");
            let mut scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64));
            if let Some(cap) = model.config().final_logit_softcap {
                // Soft-capped logits (Gemma 2): the products round the logits before the cap,
                // `cap · atanh(logit / cap)`, so that is the scale their error follows. The
                // ratio is bounded first: a saturated logit rounds to the cap itself.
                scale = cap * (scale / cap).min(0.999_999).atanh();
            }
            for (precision, tolerance) in [
                (MatmulPrecision::Bf16, BF16_LOGITS_TOLERANCE),
                (MatmulPrecision::F16, F16_LOGITS_TOLERANCE),
            ] {
                if !dev.device.supports_dtype(precision.dtype()) {
                    println!(
                        "[{}] skipped {}: not on this backend",
                        dev.name,
                        precision.name()
                    );
                    continue;
                }
                let got = golden_logits_of(
                    &model.clone().with_matmul_precision(precision),
                    name,
                    &dev.device,
                );
                let error = max_abs_diff(&got, &want);
                assert!(
                    error <= tolerance * scale,
                    "[{}] {name} {}: max |Δ| {error} > {tolerance} x {scale}",
                    dev.name,
                    precision.name()
                );
                assert!(
                    error > 0.0,
                    "{name} {}: nothing was rounded",
                    precision.name()
                );
                println!(
                    "[{}] {name} {}: max |Δ golden| {:.2e} of max |logit| {scale:.2}",
                    dev.name,
                    precision.name(),
                    error / scale
                );
            }
        }
    }
}
