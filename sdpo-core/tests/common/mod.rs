//! Helpers shared by the sdpo-core integration tests: tensors from fixture numbers in a chosen
//! precision, and exact mask comparison
//! (tolerance checks use `sdpo_testkit::assert_close`).
#![allow(dead_code)]

pub mod batch;

use burn::tensor::{Bool, DType, Device, Tensor, TensorData};
use serde_json::Value;

/// The working precision of a golden block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Precision {
    F32,
    F64,
}

impl Precision {
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::F64 => DType::F64,
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Precision::F32 => "float32",
            Precision::F64 => "float64",
        }
    }
}

/// A JSON number, or `null` read as `null_as`.
pub fn num(v: &Value, null_as: f64) -> f64 {
    match v {
        Value::Null => null_as,
        other => other
            .as_f64()
            .unwrap_or_else(|| panic!("expected a number, got {other}")),
    }
}

pub fn vec1(v: &Value, null_as: f64) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| num(x, null_as))
        .collect()
}

pub fn vec2(v: &Value, null_as: f64) -> Vec<Vec<f64>> {
    v.as_array()
        .expect("array of arrays")
        .iter()
        .map(|row| vec1(row, null_as))
        .collect()
}

/// Rounds to the working precision exactly as parsing the decimal in that precision would
/// (decimal -> f64 -> f32 equals decimal -> f32: every f32 rounding midpoint is an f64).
fn round(x: f64, p: Precision) -> f64 {
    match p {
        Precision::F32 => x as f32 as f64,
        Precision::F64 => x,
    }
}

fn data(values: Vec<f64>, shape: Vec<usize>, p: Precision) -> TensorData {
    match p {
        Precision::F32 => TensorData::new(values.into_iter().map(|x| x as f32).collect(), shape),
        Precision::F64 => TensorData::new(values, shape),
    }
}

pub fn tensor1(values: &[f64], p: Precision, device: &Device) -> Tensor<1> {
    Tensor::from_data(
        data(values.to_vec(), vec![values.len()], p),
        (device, p.dtype()),
    )
}

pub fn tensor2(rows: &[Vec<f64>], p: Precision, device: &Device) -> Tensor<2> {
    let t = rows.first().map_or(0, Vec::len);
    let flat: Vec<f64> = rows.iter().flatten().map(|&x| round(x, p)).collect();
    Tensor::from_data(data(flat, vec![rows.len(), t], p), (device, p.dtype()))
}

pub fn mask2(rows: &[Vec<f64>], device: &Device) -> Tensor<2, Bool> {
    let t = rows.first().map_or(0, Vec::len);
    let flat: Vec<bool> = rows.iter().flatten().map(|&x| x != 0.0).collect();
    Tensor::from_data(TensorData::new(flat, vec![rows.len(), t]), device)
}

pub fn host1(t: Tensor<1>) -> Vec<f64> {
    t.try_into_vec_as::<f64>().expect("read tensor")
}

pub fn host2(t: Tensor<2>) -> Vec<Vec<f64>> {
    let [_, cols] = t.dims();
    let flat = t.try_into_vec_as::<f64>().expect("read tensor");
    flat.chunks(cols.max(1)).map(<[f64]>::to_vec).collect()
}

pub fn host_mask(t: Tensor<2, Bool>) -> Vec<Vec<f64>> {
    host2(t.float())
}

pub fn assert_eq_mask(what: &str, actual: &[Vec<f64>], expected: &[Vec<f64>]) {
    assert_eq!(actual.len(), expected.len(), "{what}: rows");
    for (b, (ra, re)) in actual.iter().zip(expected).enumerate() {
        assert_eq!(ra, re, "{what}: row {b} differs");
    }
}
