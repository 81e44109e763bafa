//! One training step of the trainer's own paths on the batch of `sdpo_e2e.json` (policy = tiny
//! `models/llama`, reference = tiny `models/llama_tied`): the whole-batch path (concatenated
//! forward of policy and reference, per-token log-probs, SDPO selection, loss, autodiff
//! backward) and the memory-bounded path of `gradient_checkpointing` (`logps::policy_step`
//! through the trainer's `objective::micro_step`, blocks and chunks of one position), each with two
//! rows per pair and with the shared-prompt rows (`shared_prompt_forward`). The loss must
//! equal the golden `loss_mean` and every policy gradient the golden gradient (PyTorch autograd).

use burn::module::{Module, ModuleMapper, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, FloatDType, Tensor};
use sdpo_core::read_metrics;
use sdpo_core::{LossConfig, LossType, LossTypes, PreferenceLoss};
use sdpo_data::PreferenceBatch;
use sdpo_models::{CausalLm, MatmulPrecision};
use sdpo_testkit::{Tolerance, assert_close};
use sdpo_train::logps::{DeviceBatch, LogpsPath, MemoryBudget, RowLayout};
use sdpo_train::objective::micro_step;
use sdpo_train::reference::Reference;
use serde_json::Value;

mod e2e_batch;
use e2e_batch::sdpo_e2e_batch as batch;

/// Replaces every parameter by its gradient (zeros where there is none).
struct GradientsAsParams<'a>(&'a GradientsParams);

impl ModuleMapper for GradientsAsParams<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, value, mapper) = param.consume();
        let grad = self.0.get::<D>(id).unwrap_or_else(|| value.zeros_like());
        Param::from_mapped_value(id, grad.without_autodiff(), mapper)
    }
}

/// One step of the trainer's objective on the e2e batch: the loss and the policy's gradients.
fn sdpo_step(
    device: &Device,
    fixture: &Value,
    host: &PreferenceBatch,
    path: LogpsPath,
    q: f64,
    precision: MatmulPrecision,
) -> (f64, GradientsParams, CausalLm) {
    let dir = sdpo_testkit::fixtures_dir();
    let train_device = device.clone().autodiff();
    let policy = CausalLm::from_pretrained(dir.join("models/llama"), &train_device)
        .unwrap()
        .with_matmul_precision(precision)
        .train();
    let reference = Reference::Model(Box::new(
        CausalLm::from_pretrained(dir.join("models/llama_tied"), device)
            .unwrap()
            .with_matmul_precision(precision),
    ));
    let mut objective = PreferenceLoss::new(LossConfig {
        loss_type: LossTypes::One(LossType::Sdpo),
        beta: fixture["beta"].as_f64().unwrap(),
        sdpo_threshold: q,
        ..LossConfig::default()
    })
    .unwrap();
    let device_batch = DeviceBatch::new(host, device);
    let scoring = sdpo_train::ScoringModels::none();
    let out = micro_step(
        &policy,
        sdpo_train::objective::FrozenModels {
            reference: &reference,
            scoring: &scoring,
        },
        &path,
        host,
        &device_batch,
        &mut objective,
        1.0,
    )
    .unwrap();
    let metrics = read_metrics(out.metrics).unwrap();
    let loss = metrics.iter().find(|(k, _)| *k == "loss").unwrap().1;
    let grads = out.grads;
    (loss, grads, policy)
}

/// `sdpo_e2e.json` and the bytes of `sdpo_e2e_grads.safetensors`.
fn e2e_fixture() -> (Value, Vec<u8>) {
    let fixture = serde_json::from_str(&sdpo_testkit::read_fixture("sdpo_e2e.json")).unwrap();
    let grads = sdpo_testkit::fixtures_dir().join("sdpo_e2e_grads.safetensors");
    (fixture, std::fs::read(grads).unwrap())
}

/// The golden `loss_mean` at threshold `q`.
fn golden_loss(fixture: &Value, q: f64) -> f64 {
    fixture["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["threshold"].as_f64() == Some(q))
        .unwrap()["loss_mean"]
        .as_f64()
        .unwrap()
}

/// `(name, ours, golden)` for every gradient the golden file holds at threshold `q`.
fn gradients_with_goldens(
    policy: &CausalLm,
    grads: &GradientsParams,
    golden: &safetensors::SafeTensors<'_>,
    q: f64,
) -> Vec<(String, Vec<f32>, Vec<f32>)> {
    let as_model = policy.valid().map(&mut GradientsAsParams(grads));
    let tmp = tempfile::tempdir().unwrap();
    as_model.save_pretrained(tmp.path()).unwrap();
    let ours_bytes = std::fs::read(tmp.path().join("model.safetensors")).unwrap();
    let ours = safetensors::SafeTensors::deserialize(&ours_bytes).unwrap();
    let f32s = |bytes: &[u8]| -> Vec<f32> {
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let prefix = format!("q{q:?}/");
    let mut out = Vec::new();
    for (name, view) in golden.tensors() {
        let Some(param) = name.strip_prefix(&prefix) else {
            continue;
        };
        let got_view = ours
            .tensor(param)
            .unwrap_or_else(|_| panic!("no gradient for {param}"));
        assert_eq!(got_view.shape(), view.shape(), "{param} shape");
        out.push((param.to_string(), f32s(got_view.data()), f32s(view.data())));
    }
    assert!(out.len() > 10, "only {} gradients checked", out.len());
    out
}

#[test]
fn one_sdpo_step_matches_the_golden_loss_and_gradients() {
    let (fixture, golden_bytes) = e2e_fixture();
    let golden = safetensors::SafeTensors::deserialize(&golden_bytes).unwrap();
    let host = batch(&fixture);
    for dev in sdpo_testkit::test_devices!() {
        // One-position attention blocks and head chunks: every split the engine can make.
        let tiny = MemoryBudget {
            bytes: 1,
            max_buffer_bytes: 1,
        };
        let paths = [LogpsPath::WHOLE, LogpsPath::bounded(tiny)]
            .into_iter()
            .flat_map(|p| [p, p.with_layout(RowLayout::SharedPrompt)]);
        for (q, path) in [0.0, 0.6]
            .into_iter()
            .flat_map(|q| paths.clone().map(move |p| (q, p)))
        {
            let (actual, grads, policy) =
                sdpo_step(&dev.device, &fixture, &host, path, q, MatmulPrecision::F32);
            let dev_name = format!("{} {path:?}", dev.name);
            assert_close(
                &[actual],
                &[golden_loss(&fixture, q)],
                Tolerance::absolute(1e-5),
                &format!("[{dev_name}] q={q} loss vs golden"),
            );
            let gradients = gradients_with_goldens(&policy, &grads, &golden, q);
            for (param, got, want) in &gradients {
                // The fixture README: 1e-4 relative to the tensor's max |value|.
                assert_close(
                    got,
                    want,
                    Tolerance::relative_to_max(1e-4),
                    &format!("[{dev_name}] q={q} gradient of {param}"),
                );
            }
            println!(
                "[{dev_name}] q={q}: loss and {} parameter gradients match",
                gradients.len()
            );
        }
    }
}

/// Loss tolerance of a step with bfloat16 products against the float32 goldens.
const BF16_LOSS_TOLERANCE: f64 = 2e-2;
/// Gradient tolerance (relative to the tensor's max |value|) of the same step.
const BF16_GRAD_TOLERANCE: f64 = 5e-2;

/// `bf16 = true`: the products in bfloat16, the rest in float32. The loss and every gradient
/// stay within the stated tolerances of the float32 goldens (bfloat16 keeps 8 significant
/// bits), on every backend that has bfloat16 tensors (flex converts them for its products;
/// the rounding is the same), and the products really are rounded: the gradients are not the
/// float32 ones.
#[test]
fn one_sdpo_step_with_bf16_products_stays_near_the_golden_loss_and_gradients() {
    let (fixture, golden_bytes) = e2e_fixture();
    let golden = safetensors::SafeTensors::deserialize(&golden_bytes).unwrap();
    let host = batch(&fixture);
    for dev in sdpo_testkit::test_devices!() {
        if !dev.device.supports_dtype(FloatDType::BF16) {
            println!(
                "[{}] skipped: no bfloat16 tensors on this backend",
                dev.name
            );
            continue;
        }
        for (q, path) in [0.0, 0.6].into_iter().flat_map(|q| {
            [
                LogpsPath::WHOLE,
                LogpsPath::WHOLE.with_layout(RowLayout::SharedPrompt),
            ]
            .map(move |p| (q, p))
        }) {
            let dev_name = format!("{} {path:?} bf16", dev.name);
            let (actual, grads, policy) =
                sdpo_step(&dev.device, &fixture, &host, path, q, MatmulPrecision::Bf16);
            let loss_error = (actual - golden_loss(&fixture, q)).abs();
            assert_close(
                &[actual],
                &[golden_loss(&fixture, q)],
                Tolerance::absolute(BF16_LOSS_TOLERANCE),
                &format!("[{dev_name}] q={q} loss vs golden"),
            );
            let gradients = gradients_with_goldens(&policy, &grads, &golden, q);
            let mut worst = 0.0f64;
            for (param, got, want) in &gradients {
                assert_close(
                    got,
                    want,
                    Tolerance::relative_to_max(BF16_GRAD_TOLERANCE),
                    &format!("[{dev_name}] q={q} gradient of {param}"),
                );
                let scale = sdpo_testkit::max_abs_diff(want, &vec![0.0f32; want.len()]);
                worst = worst.max(sdpo_testkit::max_abs_diff(got, want) / scale.max(1e-12));
            }
            let all_equal = gradients.iter().all(|(_, got, want)| got == want);
            let (f32_loss, _, _) =
                sdpo_step(&dev.device, &fixture, &host, path, q, MatmulPrecision::F32);
            assert!(
                !all_equal && actual != f32_loss,
                "[{dev_name}] q={q}: bf16 gave exactly the float32 numbers; were the products rounded?"
            );
            println!(
                "[{dev_name}] q={q}: loss {loss_error:.2e} from the golden, gradients within \
                 {worst:.2e} of max |golden|"
            );
        }
    }
}

#[test]
fn logits_in_row_chunks_give_the_same_log_probs() {
    // Large-vocabulary batches run their forward pass in row chunks (a GPU cannot always
    // allocate the whole [2B, T, vocab] logits); one row at a time must give the same numbers.
    let dir = sdpo_testkit::fixtures_dir();
    let fixture: Value =
        serde_json::from_str(&sdpo_testkit::read_fixture("sdpo_e2e.json")).unwrap();
    let host = batch(&fixture);
    for dev in sdpo_testkit::test_devices!() {
        let model = CausalLm::from_pretrained(dir.join("models/llama"), &dev.device).unwrap();
        let device_batch = DeviceBatch::new(&host, &dev.device);
        let whole = sdpo_train::logps::model_logps(&model, &device_batch).unwrap();
        let rows = sdpo_train::logps::model_logps_chunked(&model, &device_batch, 1, false).unwrap();
        let pairs = [(whole.chosen, rows.chosen), (whole.rejected, rows.rejected)];
        for (a, b) in pairs {
            let (a, b) = (
                a.try_into_vec_as::<f32>().unwrap(),
                b.try_into_vec_as::<f32>().unwrap(),
            );
            assert_close(
                &b,
                &a,
                Tolerance::absolute(1e-5),
                &format!("[{}] chunked vs whole log-probs", dev.name),
            );
        }
        for (a, b) in [
            (whole.chosen_logits_mean, rows.chosen_logits_mean),
            (whole.rejected_logits_mean, rows.rejected_logits_mean),
        ] {
            let (a, b) = (a.into_scalar::<f64>(), b.into_scalar::<f64>());
            assert_close(
                &[b],
                &[a],
                Tolerance::elementwise(1e-5, 1e-5),
                &format!("[{}] chunked vs whole logits mean", dev.name),
            );
        }
        let golden = fixture["policy_chosen_logps"].as_array().unwrap()[0]
            .as_array()
            .unwrap()[2]
            .as_f64()
            .unwrap();
        assert!(golden.is_finite());
    }
}
