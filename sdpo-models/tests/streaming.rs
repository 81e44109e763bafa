//! A model streamed one piece at a time (`StreamedLm`) computes the logits of the model loaded
//! whole, bit for bit, on every tiny checkpoint and from a sharded copy; only the loaded
//! piece's tensors are in memory; bad requests are errors.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use common::{host, model_dir, tiny_models};
use sdpo_models::checkpoint::read_header;
use sdpo_models::{CausalLm, Piece, StreamedLm};

/// Two right-padded rows of 9 tokens (the second with 4 padding positions).
fn batch(device: &Device) -> (Tensor<2, Int>, Tensor<2, Int>) {
    let ids = vec![1i64, 5, 7, 9, 11, 13, 2, 17, 19, 3, 4, 8, 6, 10, 0, 0, 0, 0];
    let mask = vec![1i64, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0];
    (
        Tensor::from_data(TensorData::new(ids, [2, 9]), device),
        Tensor::from_data(TensorData::new(mask, [2, 9]), device),
    )
}

/// The logits of the model in memory, through the pieces with attention blocks of 4.
fn whole_logits(model: &CausalLm, ids: Tensor<2, Int>, mask: Tensor<2, Int>) -> Vec<f32> {
    let ctx = model.stack_context(mask, 4);
    let mut x = model.embed(ids, &ctx);
    for layer in 0..model.num_layers() {
        x = model.layer_forward(layer, x, &ctx);
    }
    host(model.lm_head(model.final_norm(x)))
}

/// The same through a streamed model, checking after each load that only that piece's
/// elements are in memory.
fn streamed_logits(
    model: &mut StreamedLm,
    ids: Tensor<2, Int>,
    mask: Tensor<2, Int>,
    numel: &BTreeMap<String, usize>,
) -> Vec<f32> {
    let ctx = model.model().stack_context(mask, 4);
    let expect_loaded = |model: &StreamedLm, piece: Piece| {
        let want: usize = numel
            .iter()
            .filter(|(name, _)| model.prefixes(piece).iter().any(|p| name.starts_with(p)))
            .map(|(_, n)| n)
            .sum();
        assert!(want > 0, "{piece:?} has tensors");
        assert_eq!(
            loaded_elements(model.model()),
            want,
            "{piece:?} alone in memory"
        );
    };
    let mut x = model.load(Piece::Embedding).unwrap().embed(ids, &ctx);
    expect_loaded(model, Piece::Embedding);
    for layer in 0..model.model().num_layers() {
        x = model
            .load(Piece::Layer(layer))
            .unwrap()
            .layer_forward(layer, x, &ctx);
        expect_loaded(model, Piece::Layer(layer));
    }
    let head = model.load(Piece::Head).unwrap();
    let logits = host(head.lm_head(head.final_norm(x)));
    expect_loaded(model, Piece::Head);
    model.release();
    assert_eq!(loaded_elements(model.model()), 0, "nothing after release");
    logits
}

/// Elements of the parameters in memory (lazy ones are not).
fn loaded_elements(model: &CausalLm) -> usize {
    struct Count(usize);
    impl ModuleVisitor for Count {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if param.is_initialized() {
                self.0 += param.lazy_shape().num_elements();
            }
        }
    }
    let mut count = Count(0);
    model.visit(&mut count);
    count.0
}

/// Elements per stored tensor of a checkpoint directory (its `*.safetensors`).
fn stored_elements(dir: &Path) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "safetensors")
            && !path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .contains("golden")
        {
            for (name, t) in read_header(&path).unwrap() {
                out.insert(name, t.shape.iter().product());
            }
        }
    }
    out
}

fn assert_same_bits(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let first = got
        .iter()
        .zip(want)
        .position(|(g, w)| g.to_bits() != w.to_bits() || g.is_nan());
    assert!(
        first.is_none(),
        "{what}: logit {} is {} streamed, {} in memory",
        first.unwrap_or(0),
        got[first.unwrap_or(0)],
        want[first.unwrap_or(0)]
    );
}

#[test]
fn a_streamed_model_computes_the_logits_of_the_model_in_memory() {
    let mut checked = 0;
    for dev in sdpo_testkit::test_devices!() {
        for name in &tiny_models() {
            let dir = model_dir(name);
            let model = CausalLm::from_pretrained(&dir, &dev.device).expect("load");
            let (ids, mask) = batch(&dev.device);
            let want = whole_logits(&model, ids.clone(), mask.clone());
            let mut streamed = StreamedLm::open(&dir, &dev.device).expect("open");
            assert_eq!(
                loaded_elements(streamed.model()),
                0,
                "{name}: nothing read at open"
            );
            let numel = stored_elements(&dir);
            let got = streamed_logits(&mut streamed, ids, mask, &numel);
            assert_same_bits(&got, &want, &format!("{name} on {}", dev.name));
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} models checked");
}

/// Writes `dir`'s `model.safetensors` into `out` as two shards and an index, as transformers
/// writes a large checkpoint (one tensor's layers split across the shards).
fn shard_checkpoint(dir: &Path, out: &Path) {
    std::fs::create_dir_all(out).unwrap();
    std::fs::copy(dir.join("config.json"), out.join("config.json")).unwrap();
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    let mut weight_map = serde_json::Map::new();
    for (k, part) in names.chunks(names.len().div_ceil(2)).enumerate() {
        let file = format!("model-{:05}-of-00002.safetensors", k + 1);
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = part
            .iter()
            .map(|n| (n.clone(), st.tensor(n).unwrap()))
            .collect();
        safetensors::serialize_to_file(views, None, &out.join(&file)).unwrap();
        for n in part {
            weight_map.insert(n.clone(), serde_json::Value::from(file.clone()));
        }
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    std::fs::write(out.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

#[test]
fn a_sharded_checkpoint_streams_like_one_file() {
    let device = Device::flex();
    let tmp = tempfile::tempdir().unwrap();
    for name in ["llama", "gpt2"] {
        let dir = model_dir(name);
        let sharded = tmp.path().join(name);
        shard_checkpoint(&dir, &sharded);
        let model = CausalLm::from_pretrained(&dir, &device).expect("load");
        let (ids, mask) = batch(&device);
        let want = whole_logits(&model, ids.clone(), mask.clone());
        let mut streamed = StreamedLm::open(&sharded, &device).expect("open sharded");
        let numel = stored_elements(&sharded);
        let got = streamed_logits(&mut streamed, ids, mask, &numel);
        assert_same_bits(&got, &want, name);
    }
}

#[test]
fn a_piece_the_model_lacks_and_a_damaged_checkpoint_are_errors() {
    let device = Device::flex();
    let dir = model_dir("llama");
    let mut streamed = StreamedLm::open(&dir, &device).unwrap();
    let layers = streamed.model().num_layers();
    let err = streamed.load(Piece::Layer(layers)).unwrap_err().to_string();
    assert!(err.contains(&format!("Layer({layers})")), "{err}");
    // A truncated weight file is refused at open, naming it, before any tensor is read.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(dir.join("config.json"), tmp.path().join("config.json")).unwrap();
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    std::fs::write(
        tmp.path().join("model.safetensors"),
        &bytes[..bytes.len() - 16],
    )
    .unwrap();
    let err = StreamedLm::open(tmp.path(), &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.safetensors"), "{err}");
}

/// Writes `dir`'s checkpoint into `out` with every tensor rounded to `dtype` (`BF16`, `F16`).
fn convert_checkpoint(dir: &Path, out: &Path, dtype: safetensors::Dtype) {
    std::fs::create_dir_all(out).unwrap();
    std::fs::copy(dir.join("config.json"), out.join("config.json")).unwrap();
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let converted: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let data: Vec<u8> = view
                .data()
                .chunks_exact(4)
                .flat_map(|c| {
                    let v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                    match dtype {
                        safetensors::Dtype::BF16 => half::bf16::from_f32(v).to_le_bytes(),
                        _ => half::f16::from_f32(v).to_le_bytes(),
                    }
                })
                .collect();
            (name, view.shape().to_vec(), data)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = converted
        .iter()
        .map(|(name, shape, data)| {
            let view = safetensors::tensor::TensorView::new(dtype, shape.clone(), data).unwrap();
            (name.clone(), view)
        })
        .collect();
    safetensors::serialize_to_file(views, None, &out.join("model.safetensors")).unwrap();
}

#[test]
fn half_precision_checkpoints_stream_the_values_a_load_gives() {
    let device = Device::flex();
    let tmp = tempfile::tempdir().unwrap();
    for name in ["llama", "gpt2", "qwen2"] {
        for dtype in [safetensors::Dtype::BF16, safetensors::Dtype::F16] {
            let dir = tmp.path().join(format!("{name}-{dtype:?}"));
            convert_checkpoint(&model_dir(name), &dir, dtype);
            let model = CausalLm::from_pretrained(&dir, &device).expect("load");
            let (ids, mask) = batch(&device);
            let want = whole_logits(&model, ids.clone(), mask.clone());
            let mut streamed = StreamedLm::open(&dir, &device).expect("open");
            let numel = stored_elements(&dir);
            let got = streamed_logits(&mut streamed, ids, mask, &numel);
            assert_same_bits(&got, &want, &format!("{name} in {dtype:?}"));
        }
    }
}

#[test]
#[ignore = "needs SDPO_SMOLLM2_DIR (tools/get-smollm2.sh)"]
fn smollm2_streamed_gives_the_logits_of_smollm2_in_memory() {
    let dir = sdpo_testkit::smollm2_dir();
    for dev in sdpo_testkit::test_devices!() {
        let model = CausalLm::from_pretrained(&dir, &dev.device)
            .unwrap_or_else(|e| panic!("load {}: {e}", dir.display()));
        let (ids, mask) = batch(&dev.device);
        let want = whole_logits(&model, ids.clone(), mask.clone());
        drop(model);
        let mut streamed = StreamedLm::open(&dir, &dev.device).expect("open");
        let numel = stored_elements(&dir);
        let got = streamed_logits(&mut streamed, ids, mask, &numel);
        assert_same_bits(&got, &want, &format!("SmolLM2 on {}", dev.name));
    }
}
