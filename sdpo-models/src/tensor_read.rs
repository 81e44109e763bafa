//! Reading one stored tensor straight into float32 in the module's layout: positioned reads of
//! its bytes in blocks of whole rows (no memory map, no copy of the tensor in its stored dtype),
//! each block widened to float32 and, for a transposed weight, scattered into place. What is in
//! memory is the float32 result plus one block. Widening bfloat16 and float16 is exact, so the
//! values are those burn-store's loading gives.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

use crate::checkpoint::StoredTensor;
use crate::error::ModelError;

/// Stored bytes read per block (at least one row).
const BLOCK_BYTES: usize = 8 << 20;

/// The tensor `name` of `file`, described by `stored`, as float32 values in the module's
/// layout: row-major as stored, or (`transposed`, a `[rows, cols]` weight) `[cols, rows]`.
/// safetensors is little-endian, as every host this runs on.
pub(crate) fn read_f32(
    file: &Path,
    name: &str,
    stored: &StoredTensor,
    transposed: bool,
) -> Result<Vec<f32>, ModelError> {
    let count: usize = stored.shape.iter().product();
    let (rows, cols) = match stored.shape.as_slice() {
        [rows, cols] if *rows > 0 => (*rows, *cols),
        _ if transposed => {
            return Err(ModelError::BadSafetensors {
                path: file.to_path_buf(),
                reason: format!(
                    "`{name}` is a weight matrix but is stored as {:?}",
                    stored.shape
                ),
            });
        }
        [first, ..] if *first > 0 => (*first, count / first),
        _ => (1, count),
    };
    let io = |source| ModelError::Io {
        path: file.to_path_buf(),
        source,
    };
    let handle = File::open(file).map_err(io)?;
    let mut out = vec![0f32; count];
    let element = if stored.dtype == "F32" { 4 } else { 2 };
    let rows_per_block = (BLOCK_BYTES / (cols * element).max(1)).clamp(1, rows.max(1));
    let mut block = vec![0f32; rows_per_block * cols];
    let mut halves = vec![0u16; if element == 2 { block.len() } else { 0 }];
    let mut row = 0;
    while row < rows {
        let n = rows_per_block.min(rows - row);
        let values = &mut block[..n * cols];
        let at = stored.data_start + (row * cols * element) as u64;
        match stored.dtype.as_str() {
            "F32" => handle
                .read_exact_at(bytemuck::cast_slice_mut(values), at)
                .map_err(io)?,
            "BF16" | "F16" => {
                let raw = &mut halves[..n * cols];
                handle
                    .read_exact_at(bytemuck::cast_slice_mut(raw), at)
                    .map_err(io)?;
                if stored.dtype == "BF16" {
                    bytemuck::cast_slice::<u16, bf16>(raw).convert_to_f32_slice(values);
                } else {
                    bytemuck::cast_slice::<u16, f16>(raw).convert_to_f32_slice(values);
                }
            }
            other => {
                return Err(ModelError::UnsupportedDtype {
                    path: file.to_path_buf(),
                    name: name.to_string(),
                    dtype: other.to_string(),
                });
            }
        }
        if transposed {
            for (r, source) in values.chunks_exact(cols).enumerate() {
                for (c, v) in source.iter().enumerate() {
                    out[c * rows + row + r] = *v;
                }
            }
        } else {
            out[row * cols..(row + n) * cols].copy_from_slice(values);
        }
        row += n;
    }
    Ok(out)
}
