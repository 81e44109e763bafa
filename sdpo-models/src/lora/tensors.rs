//! Adapter tensors between the device and safetensors files: host copies to write, and the
//! f32 values of named tensors read back (F32, BF16 and F16 widened exactly).

use std::collections::BTreeMap;
use std::path::Path;

use burn::prelude::*;

use crate::error::ModelError;

/// Host f32 values of a 2-D or 1-D tensor.
pub(crate) fn host_f32<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap_or_default()
}

/// One tensor to write into a safetensors file.
pub(crate) struct HostTensor {
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl HostTensor {
    pub(crate) fn new(values: Vec<f32>, shape: Vec<usize>) -> Self {
        Self {
            shape,
            bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }
}

impl safetensors::View for &HostTensor {
    fn dtype(&self) -> safetensors::Dtype {
        safetensors::Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Reads the named tensors of a safetensors file as f32 (F32, BF16 and F16 widened exactly).
pub(crate) fn read_f32_tensors(
    path: &Path,
    names: impl IntoIterator<Item = String>,
) -> Result<BTreeMap<String, Vec<f32>>, ModelError> {
    let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |reason: String| ModelError::BadSafetensors {
        path: path.to_path_buf(),
        reason,
    };
    let file = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let mut out = BTreeMap::new();
    for name in names {
        let view = file
            .tensor(&name)
            .map_err(|e| bad(format!("`{name}`: {e}")))?;
        let data = view.data();
        let values: Vec<f32> = match view.dtype() {
            safetensors::Dtype::F32 => data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            safetensors::Dtype::BF16 => data
                .chunks_exact(2)
                .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
                .collect(),
            safetensors::Dtype::F16 => data
                .chunks_exact(2)
                .map(|c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
                .collect(),
            other => {
                return Err(ModelError::UnsupportedDtype {
                    path: path.to_path_buf(),
                    name,
                    dtype: format!("{other:?}"),
                });
            }
        };
        out.insert(name, values);
    }
    Ok(out)
}
