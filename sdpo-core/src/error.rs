//! The error type of `sdpo-core`.

use thiserror::Error;

/// Everything that can go wrong in `sdpo-core`: a bad loss configuration or tensors whose shapes
/// do not fit together. Every variant names the field or tensor at fault.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum CoreError {
    /// A configuration value is out of its allowed range (or NaN).
    #[error("invalid value for `{field}`: {value} ({reason})")]
    InvalidConfig {
        /// The TRL / config-file name of the field.
        field: &'static str,
        /// The offending value, as written.
        value: String,
        /// What the field must satisfy.
        reason: String,
    },
    /// Two tensors that must have the same shape do not.
    #[error("shape mismatch: `{tensor}` has shape {actual:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The name of the tensor whose shape is wrong.
        tensor: &'static str,
        /// Its shape.
        actual: Vec<usize>,
        /// The shape it must have.
        expected: Vec<usize>,
    },
    /// A tensor is too small for the operation (for example a sequence of one token has no
    /// next-token target).
    #[error("`{tensor}` is too small: {reason}")]
    TooSmall {
        /// The name of the tensor.
        tensor: &'static str,
        /// Why it is too small.
        reason: String,
    },
    /// A loss type needs an input that was not given (e.g. `sft` needs the NLL loss).
    #[error("loss type `{loss_type}` needs `{input}`, which was not given")]
    MissingInput {
        /// The loss type that needs it.
        loss_type: &'static str,
        /// The missing input.
        input: &'static str,
    },
    /// A configuration option needs an input that was not given (e.g. `use_weighting` needs the
    /// policy's `log(sum_v p_v^2)` per position).
    #[error("`{option}` needs `{input}`, which was not given")]
    MissingOptionInput {
        /// The option (config key) that needs it.
        option: &'static str,
        /// The missing input.
        input: &'static str,
    },
    /// Reading a value back from the device failed.
    #[error("reading `{tensor}` back from the device failed: {reason}")]
    DeviceRead {
        /// What was being read.
        tensor: &'static str,
        /// The backend's message.
        reason: String,
    },
}

/// Checks that `actual` equals `expected`, naming `tensor` in the error.
pub(crate) fn expect_shape(
    tensor: &'static str,
    actual: &[usize],
    expected: &[usize],
) -> Result<(), CoreError> {
    if actual == expected {
        Ok(())
    } else {
        Err(CoreError::ShapeMismatch {
            tensor,
            actual: actual.to_vec(),
            expected: expected.to_vec(),
        })
    }
}
