//! Reading the goldens of TRL runs (fixtures/README.md sections 11, 13 and 14): the fixture's
//! JSON, the tensors of its safetensors files, and the per-step metrics compared with a run's.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::Dtype;
use sdpo_testkit::{Tolerance, assert_close, read_fixture};
use sdpo_train::MetricsRecord;
use serde_json::Value;

use super::{f64_of, series, usize_of};

/// A fixture's JSON file, relative to the fixtures folder.
pub fn json(relative: &str) -> Value {
    serde_json::from_str(&read_fixture(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// Every tensor of a safetensors file: its dtype and bytes.
pub fn read_tensors(path: &Path) -> BTreeMap<String, (Dtype, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let tensors = safetensors::SafeTensors::deserialize(&bytes)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    tensors
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, (view.dtype(), view.data().to_vec())))
        .collect()
}

/// The values of the float32 tensor `name`.
pub fn f32s(tensors: &BTreeMap<String, (Dtype, Vec<u8>)>, name: &str) -> Vec<f32> {
    let (dtype, bytes) = tensors
        .get(name)
        .unwrap_or_else(|| panic!("fixture: no tensor {name}"));
    assert_eq!(*dtype, Dtype::F32, "fixture: {name}");
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// The values of the bfloat16 tensor `name`, widened to float32 (exactly).
pub fn bf16s(tensors: &BTreeMap<String, (Dtype, Vec<u8>)>, name: &str) -> Vec<f32> {
    let (dtype, bytes) = tensors
        .get(name)
        .unwrap_or_else(|| panic!("fixture: no tensor {name}"));
    assert_eq!(*dtype, Dtype::BF16, "fixture: {name}");
    bytes
        .chunks_exact(2)
        .map(|b| f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16))
        .collect()
}

/// The HF name of a parameter's burn path (`Llama.model.norm.gamma` → `model.norm.weight`).
pub fn hf_name(path: &str) -> String {
    let name = path.split_once('.').map_or(path, |(_, rest)| rest);
    match name.strip_suffix(".gamma") {
        Some(norm) => format!("{norm}.weight"),
        None => name.to_string(),
    }
}

/// Compares the per-step metrics of `records` with the fixture's `log_history`: for each
/// `(key, abs, rel)` of `metrics`, the same steps logged and every value within the tolerance.
pub fn assert_metrics(
    fixture: &Value,
    records: &[MetricsRecord],
    metrics: &[(&str, f64, f64)],
    what: &str,
) {
    let history = fixture["log_history"].as_array().expect("log_history");
    assert!(!history.is_empty(), "fixture: empty log_history");
    for &(key, abs, rel) in metrics {
        let golden: Vec<(usize, f64)> = history
            .iter()
            .map(|r| (usize_of(&r["step"], "step"), f64_of(&r[key], key)))
            .collect();
        let ours = series(records, key);
        let steps = |s: &[(usize, f64)]| s.iter().map(|(step, _)| *step).collect::<Vec<_>>();
        assert_eq!(steps(&ours), steps(&golden), "{what} {key}: steps logged");
        let values = |s: &[(usize, f64)]| s.iter().map(|(_, v)| *v).collect::<Vec<_>>();
        let c = assert_close(
            &values(&ours),
            &values(&golden),
            Tolerance::elementwise(abs, rel),
            &format!("{what} {key}"),
        );
        println!("{what} {key}: {c:?}");
    }
}
