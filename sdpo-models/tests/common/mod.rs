//! Shared helpers for the integration tests: reading golden safetensors, comparing tensors.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use burn::prelude::*;
use safetensors::{Dtype, SafeTensors};

/// The four tiny checkpoints of `fixtures/models/`.
pub const TINY_MODELS: [&str; 4] = ["llama", "llama_tied", "qwen2", "gpt2"];

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

/// Largest |a - b| over the rows `[b, t, :]` where `mask[b * seq + t] == 1`.
///
/// `a` and `b` are `[batch, seq, width]` row-major.
pub fn max_abs_diff_masked(a: &[f32], b: &[f32], mask: &[i64], width: usize) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    assert_eq!(a.len(), mask.len() * width, "mask does not fit");
    let mut worst = 0.0f32;
    for (row, m) in mask.iter().enumerate() {
        if *m != 1 {
            continue;
        }
        for i in row * width..(row + 1) * width {
            let d = (a[i] - b[i]).abs();
            assert!(!d.is_nan(), "NaN at flat index {i}");
            worst = worst.max(d);
        }
    }
    worst
}

/// Largest |a - b| over all elements (NaN counts as infinitely bad).
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = (x - y).abs();
            if d.is_nan() { f32::INFINITY } else { d }
        })
        .fold(0.0, f32::max)
}
