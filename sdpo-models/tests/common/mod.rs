//! Shared helpers for the integration tests: reading golden safetensors, comparing tensors.
#![allow(dead_code)]

pub mod golden_dpo;

use std::path::{Path, PathBuf};

use burn::prelude::*;
use safetensors::{Dtype, SafeTensors};

/// The tiny checkpoints of `fixtures/models/` (every directory with a `golden.json`).
pub fn tiny_models() -> Vec<String> {
    sdpo_testkit::fixture_model_names()
}

/// `fixtures/models/<name>` (honours `SDPO_FIXTURES`).
pub fn model_dir(name: &str) -> PathBuf {
    sdpo_testkit::fixtures_dir().join("models").join(name)
}

/// All tensors of a safetensors file, as f32 / i64 host arrays with their shapes.
pub struct Golden {
    bytes: Vec<u8>,
    path: PathBuf,
}

impl Golden {
    pub fn open(path: &Path) -> Self {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        Self {
            bytes,
            path: path.to_path_buf(),
        }
    }

    fn view(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes)
            .unwrap_or_else(|e| panic!("parse {}: {e}", self.path.display()))
    }

    pub fn names(&self) -> Vec<String> {
        self.view().names().into_iter().map(String::from).collect()
    }

    pub fn f32(&self, name: &str) -> (Vec<f32>, Vec<usize>) {
        let st = self.view();
        let t = st
            .tensor(name)
            .unwrap_or_else(|e| panic!("{name} in {}: {e}", self.path.display()));
        assert_eq!(t.dtype(), Dtype::F32, "{name}");
        let data = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        (data, t.shape().to_vec())
    }

    pub fn i64(&self, name: &str) -> (Vec<i64>, Vec<usize>) {
        let st = self.view();
        let t = st
            .tensor(name)
            .unwrap_or_else(|e| panic!("{name} in {}: {e}", self.path.display()));
        assert_eq!(t.dtype(), Dtype::I64, "{name}");
        let data = t
            .data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        (data, t.shape().to_vec())
    }

    pub fn int_tensor(&self, name: &str, device: &Device) -> Tensor<2, Int> {
        let (data, shape) = self.i64(name);
        Tensor::from_data(TensorData::new(data, [shape[0], shape[1]]), device)
    }
}

/// The tensor's values on the host as f32.
pub fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// The rows `[b, t, :]` of a `[batch, seq, width]` row-major array where `keep(mask[b * seq +
/// t])`, concatenated (to compare only valid, or only padded, positions).
pub fn select_rows(
    values: &[f32],
    mask: &[i64],
    width: usize,
    keep: impl Fn(i64) -> bool,
) -> Vec<f32> {
    assert_eq!(values.len(), mask.len() * width, "mask does not fit");
    mask.iter()
        .enumerate()
        .filter(|(_, m)| keep(**m))
        .flat_map(|(row, _)| values[row * width..(row + 1) * width].iter().copied())
        .collect()
}

/// A fresh temporary copy of a tiny checkpoint (config.json + model.safetensors).
pub fn copy_model(name: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(model_dir(name).join(file), tmp.path().join(file))
            .unwrap_or_else(|e| panic!("copy {file}: {e}"));
    }
    tmp
}

/// One stored tensor: dtype, shape, raw little-endian bytes.
#[derive(Clone)]
pub struct RawTensor {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl safetensors::View for RawTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// Every tensor of a safetensors file, by name (sorted).
pub fn read_raw(path: &Path) -> std::collections::BTreeMap<String, RawTensor> {
    let golden = Golden::open(path);
    let st = golden.view();
    st.tensors()
        .into_iter()
        .map(|(name, t)| {
            (
                name,
                RawTensor {
                    dtype: t.dtype(),
                    shape: t.shape().to_vec(),
                    data: t.data().to_vec(),
                },
            )
        })
        .collect()
}

/// Writes tensors as a safetensors file with `format: pt` metadata.
pub fn write_raw(path: &Path, tensors: &std::collections::BTreeMap<String, RawTensor>) {
    let metadata = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(
        tensors.iter().map(|(k, v)| (k.clone(), v.clone())),
        Some(metadata),
        path,
    )
    .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Reads `config.json` of `dir` as a JSON object.
pub fn read_config(dir: &Path) -> serde_json::Map<String, serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("config.json")).expect("config.json");
    serde_json::from_str(&text).expect("config.json is JSON")
}

/// Writes a JSON object as `dir/config.json`.
pub fn write_config(dir: &Path, config: &serde_json::Map<String, serde_json::Value>) {
    let text = serde_json::to_string_pretty(config).expect("serialise");
    std::fs::write(dir.join("config.json"), text).expect("write config.json");
}

/// Logits of `model` on the golden inputs of `name` (host f32, `[batch * seq * vocab]`).
pub fn golden_logits_of(model: &sdpo_models::CausalLm, name: &str, device: &Device) -> Vec<f32> {
    let golden = Golden::open(&model_dir(name).join("golden.safetensors"));
    let ids = golden.int_tensor("input_ids", device);
    let mask = golden.int_tensor("attention_mask", device);
    host(model.forward(ids, mask))
}

/// The tiny fixture models that every architecture test covers: every model of the fixture set
/// (one or more per family).
#[allow(dead_code)]
pub fn tiny_model_names() -> Vec<String> {
    tiny_models()
}

/// Largest `|a - b|` over the rows whose mask entry is 1 (`width` values per row); a NaN or a
/// mismatched infinity anywhere in those rows gives +inf, so a comparison with it fails.
#[allow(dead_code)]
pub fn max_abs_diff_masked(a: &[f32], b: &[f32], mask: &[i64], width: usize) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    assert_eq!(a.len(), mask.len() * width, "mask does not fit");
    let mut worst = 0.0f32;
    for (row, m) in mask.iter().enumerate() {
        if *m != 1 {
            continue;
        }
        let range = row * width..(row + 1) * width;
        let d = sdpo_testkit::max_abs_diff(&a[range.clone()], &b[range]) as f32;
        worst = worst.max(d);
        if d.is_infinite() {
            return f32::INFINITY;
        }
    }
    worst
}

/// [`sdpo_testkit::max_abs_diff`] as f32 (NaN or a mismatched infinity gives +inf).
#[allow(dead_code)]
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    sdpo_testkit::max_abs_diff(a, b) as f32
}

/// A JSON integer matrix (`[[1, 2], [3, 4]]`) as an int tensor.
pub fn int_matrix(v: &serde_json::Value, device: &Device) -> Tensor<2, Int> {
    let rows: Vec<Vec<i64>> = serde_json::from_value(v.clone()).expect("int matrix");
    let (b, t) = (rows.len(), rows.first().map_or(0, Vec::len));
    Tensor::from_data(
        TensorData::new(rows.into_iter().flatten().collect::<Vec<_>>(), [b, t]),
        device,
    )
}

/// Per-token completion log-probs of one side of a golden batch (`input_ids`,
/// `attention_mask`, `completion_mask`) and its loss mask.
pub fn side_logps(
    model: &sdpo_models::CausalLm,
    side: &serde_json::Value,
    device: &Device,
) -> (Tensor<2>, Tensor<2, Bool>) {
    let ids = int_matrix(&side["input_ids"], device);
    let logits = model.forward(ids.clone(), int_matrix(&side["attention_mask"], device));
    sdpo_core::completion_logps(logits, ids, int_matrix(&side["completion_mask"], device))
        .expect("logps")
}
