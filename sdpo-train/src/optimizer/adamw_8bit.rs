//! bitsandbytes' 8-bit AdamW (`optim = "adamw_8bit"`) as bitsandbytes 0.50.2 runs it on the
//! CPU, operation for operation: parameters of at least [`MIN_8BIT_SIZE`] values keep both
//! moments as 8-bit codes on bitsandbytes' dynamic maps with one float32 maximum per block of
//! [`STATE_BLOCK`] (the first moment on the signed map, the second on the unsigned one),
//! dequantized, updated in float32 and quantized again every step; smaller parameters (and
//! embeddings, which transformers overrides to 32 bits) keep float32 moments with
//! bitsandbytes' 32-bit update. The states live in host memory on every backend (as
//! `paged_adamw_8bit` pages them out of the GPU); each step reads the parameter and its
//! gradient to the host and writes the parameter back.

use burn::optim::{LearningRate, Optimizer, RecordState, StateSink, StateSource};
use burn::tensor::{Device, Tensor, TensorData};
use burn_pack::Scalar;

use sdpo_models::quant::dynamic::DynamicMap;

/// Parameters with fewer values keep float32 moments (bitsandbytes' `min_8bit_size`).
pub const MIN_8BIT_SIZE: usize = 4096;

/// Values per block of an 8-bit moment (bitsandbytes' optimizer block size).
pub const STATE_BLOCK: usize = 256;

/// bitsandbytes' `AdamW(optim_bits=8)` for one parameter group; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamW8bit {
    /// `adam_beta1`.
    pub beta_1: f64,
    /// `adam_beta2`.
    pub beta_2: f64,
    /// `adam_epsilon`.
    pub epsilon: f64,
    /// Decoupled weight decay of the group.
    pub weight_decay: f64,
    /// Float32 moments whatever the size (transformers' `optim_bits = 32` override of
    /// `nn.Embedding` weights).
    pub float_moments: bool,
    /// The parameters are matrices held transposed from their Hugging Face layout (burn's
    /// `Linear` weights): the blocks of the 8-bit moments follow the Hugging Face layout, as
    /// bitsandbytes blocks the torch tensor.
    pub hf_transposed: bool,
}

/// The moments of one parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Moments {
    /// Float32 moments (small parameters, embeddings).
    Float {
        /// First moment.
        m: Vec<f32>,
        /// Second moment.
        v: Vec<f32>,
    },
    /// 8-bit blockwise moments.
    Blockwise {
        /// First moment's codes on the signed dynamic map.
        m_codes: Vec<u8>,
        /// First moment's maximum per block.
        m_absmax: Vec<f32>,
        /// Second moment's codes on the unsigned dynamic map.
        v_codes: Vec<u8>,
        /// Second moment's maximum per block.
        v_absmax: Vec<f32>,
    },
}

impl Moments {
    fn zeros(len: usize, blockwise: bool) -> Self {
        if blockwise {
            let blocks = len.div_ceil(STATE_BLOCK);
            Moments::Blockwise {
                m_codes: vec![0; len],
                m_absmax: vec![0.0; blocks],
                v_codes: vec![0; len],
                v_absmax: vec![0.0; blocks],
            }
        } else {
            Moments::Float {
                m: vec![0.0; len],
                v: vec![0.0; len],
            }
        }
    }

    /// The number of parameter values the moments are for.
    pub fn len(&self) -> usize {
        match self {
            Moments::Float { m, .. } => m.len(),
            Moments::Blockwise { m_codes, .. } => m_codes.len(),
        }
    }

    /// Whether the moments are for an empty parameter.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Both moments as float32 values (8-bit ones dequantized as bitsandbytes does:
    /// `code[q] · absmax` of the block).
    pub fn dequantized(&self) -> (Vec<f32>, Vec<f32>) {
        match self {
            Moments::Float { m, v } => (m.clone(), v.clone()),
            Moments::Blockwise {
                m_codes,
                m_absmax,
                v_codes,
                v_absmax,
            } => {
                let mut m = vec![0.0; m_codes.len()];
                let mut v = vec![0.0; v_codes.len()];
                DynamicMap::Signed.dequantize_into(m_codes, m_absmax, STATE_BLOCK, &mut m);
                DynamicMap::Unsigned.dequantize_into(v_codes, v_absmax, STATE_BLOCK, &mut v);
                (m, v)
            }
        }
    }

    /// 8-bit moments of float32 ones, quantized as bitsandbytes does (`m` on the signed map,
    /// `v` on the unsigned one, blocks of [`STATE_BLOCK`]).
    pub fn quantized(m: &[f32], v: &[f32]) -> Self {
        let (m_codes, m_absmax) = DynamicMap::Signed.quantize(m, STATE_BLOCK);
        let (v_codes, v_absmax) = DynamicMap::Unsigned.quantize(v, STATE_BLOCK);
        Moments::Blockwise {
            m_codes,
            m_absmax,
            v_codes,
            v_absmax,
        }
    }

    /// Whether the lengths agree (one maximum per block, both moments as long).
    fn is_consistent(&self) -> bool {
        match self {
            Moments::Float { m, v } => m.len() == v.len(),
            Moments::Blockwise {
                m_codes,
                m_absmax,
                v_codes,
                v_absmax,
            } => {
                let blocks = m_codes.len().div_ceil(STATE_BLOCK);
                v_codes.len() == m_codes.len()
                    && m_absmax.len() == blocks
                    && v_absmax.len() == blocks
            }
        }
    }
}

/// The optimizer state of one parameter: bitsandbytes' step counter and the moments, in host
/// memory.
#[derive(Debug, Clone, PartialEq)]
pub struct AdamW8bitState {
    /// Steps taken (bitsandbytes' `state["step"]`).
    pub step: u64,
    /// The moments.
    pub moments: Moments,
}

impl AdamW8bit {
    /// One update of `param` (float32 values) by `grad` with learning rate `lr`.
    pub fn update(&self, lr: f64, param: &mut [f32], grad: &[f32], state: &mut AdamW8bitState) {
        state.step += 1;
        let step = state.step as i32;
        let (b1, b2) = (self.beta_1, self.beta_2);
        let correction1 = 1.0 - b1.powi(step);
        let correction2 = (1.0 - b2.powi(step)).sqrt();
        let decay = (self.weight_decay > 0.0).then_some((1.0 - lr * self.weight_decay) as f32);
        let (b1_f, b2_f) = (b1 as f32, b2 as f32);
        let (a1, a2) = ((1.0 - b1) as f32, (1.0 - b2) as f32);
        // PyTorch's vectorised `m.mul_(b1).add_(g, alpha=1-b1)` and
        // `v.mul_(b2).addcmul_(g, g, value=1-b2)`, both compiled to fused multiply-adds:
        // `fma(g, 1-b1, m·b1)` and `fma((1-b2)·g, g, v·b2)` (checked on bitsandbytes' states).
        let moments = |m: &mut f32, v: &mut f32, g: f32| {
            *m = g.mul_add(a1, *m * b1_f);
            *v = (a2 * g).mul_add(g, *v * b2_f);
        };
        match &mut state.moments {
            Moments::Float { m, v } => {
                // bitsandbytes' `_optimizer_update_32bit_cpu`.
                let step_size = (-lr * correction2 / correction1) as f32;
                let eps = (self.epsilon * correction2) as f32;
                for (((p, g), m), v) in param.iter_mut().zip(grad).zip(m).zip(v) {
                    moments(m, v, *g);
                    if let Some(decay) = decay {
                        *p *= decay;
                    }
                    let update = *m / (v.sqrt() + eps);
                    *p = update.mul_add(step_size, *p);
                }
            }
            blockwise @ Moments::Blockwise { .. } => {
                // bitsandbytes' `_optimizer_update_8bit_blockwise_cpu`.
                let (mut m, mut v) = blockwise.dequantized();
                let c2 = correction2 as f32;
                let eps = self.epsilon as f32;
                let step_size = (-lr / correction1) as f32;
                for (((p, g), m), v) in param.iter_mut().zip(grad).zip(&mut m).zip(&mut v) {
                    moments(m, v, *g);
                    let denom = v.sqrt() / c2 + eps;
                    if let Some(decay) = decay {
                        *p *= decay;
                    }
                    *p += step_size * *m / denom;
                }
                *blockwise = Moments::quantized(&m, &v);
            }
        }
    }

    /// The zero state bitsandbytes starts a parameter of `len` values with.
    pub fn initial_state(&self, len: usize) -> AdamW8bitState {
        AdamW8bitState {
            step: 0,
            moments: Moments::zeros(len, !self.float_moments && len >= MIN_8BIT_SIZE),
        }
    }
}

/// The row-major values of the transpose of a row-major `[rows, cols]` matrix.
fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for (r, row) in values.chunks_exact(cols).enumerate() {
        for (c, v) in row.iter().enumerate() {
            out[c * rows + r] = *v;
        }
    }
    out
}

/// A float tensor's values as float32 on the host.
fn host_values<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("converted to f32 just before")
}

impl Optimizer for AdamW8bit {
    type State<const D: usize> = AdamW8bitState;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let device = tensor.device();
        let (shape, dims, dtype) = (tensor.shape(), tensor.dims(), tensor.dtype());
        let mut param = host_values(tensor);
        let mut grad = host_values(grad);
        let transposed = match dims.as_slice() {
            &[rows, cols] if self.hf_transposed => Some((rows, cols)),
            _ => None,
        };
        if let Some((rows, cols)) = transposed {
            param = transpose(&param, rows, cols);
            grad = transpose(&grad, rows, cols);
        }
        let mut state = state.unwrap_or_else(|| self.initial_state(param.len()));
        // A state restored from a checkpoint has been checked against its parameter's size
        // before loading (`checkpoint::check_optimizer_state`), so this holds.
        assert_eq!(
            state.moments.len(),
            param.len(),
            "8-bit AdamW state for {} values applied to a parameter of {}",
            state.moments.len(),
            param.len()
        );
        self.update(lr, &mut param, &grad, &mut state);
        if let Some((rows, cols)) = transposed {
            param = transpose(&param, cols, rows);
        }
        let updated = Tensor::<D>::from_data(TensorData::new(param, shape), &device).cast(dtype);
        (updated, Some(state))
    }

    fn to_device<const D: usize>(state: Self::State<D>, _device: &Device) -> Self::State<D> {
        state
    }
}

const STEP: &str = "step";

impl RecordState for AdamW8bitState {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        out.push_scalar(prefix, STEP, Scalar::from(self.step));
        let len = self.moments.len();
        match &self.moments {
            Moments::Float { m, v } => {
                out.push_tensor(prefix, "m", TensorData::new(m.clone(), [len]));
                out.push_tensor(prefix, "v", TensorData::new(v.clone(), [len]));
            }
            Moments::Blockwise {
                m_codes,
                m_absmax,
                v_codes,
                v_absmax,
            } => {
                let blocks = m_absmax.len();
                out.push_tensor(prefix, "m_codes", TensorData::new(m_codes.clone(), [len]));
                out.push_tensor(
                    prefix,
                    "m_absmax",
                    TensorData::new(m_absmax.clone(), [blocks]),
                );
                out.push_tensor(prefix, "v_codes", TensorData::new(v_codes.clone(), [len]));
                out.push_tensor(
                    prefix,
                    "v_absmax",
                    TensorData::new(v_absmax.clone(), [blocks]),
                );
            }
        }
    }

    fn state_unflatten(prefix: &str, src: &mut StateSource, _device: &Device) -> Option<Self> {
        let step = u64::try_from(src.take_scalar(prefix, STEP)?).ok()?;
        let moments = if let Some(m) = src.take_tensor(prefix, "m") {
            Moments::Float {
                m: m.try_into_vec().ok()?,
                v: src.take_tensor(prefix, "v")?.try_into_vec().ok()?,
            }
        } else {
            Moments::Blockwise {
                m_codes: src.take_tensor(prefix, "m_codes")?.try_into_vec().ok()?,
                m_absmax: src.take_tensor(prefix, "m_absmax")?.try_into_vec().ok()?,
                v_codes: src.take_tensor(prefix, "v_codes")?.try_into_vec().ok()?,
                v_absmax: src.take_tensor(prefix, "v_absmax")?.try_into_vec().ok()?,
            }
        };
        moments
            .is_consistent()
            .then_some(AdamW8bitState { step, moments })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposing_twice_gives_the_matrix_back() {
        let values: Vec<f32> = (0..6).map(|v| v as f32).collect();
        let t = transpose(&values, 2, 3);
        assert_eq!(t, [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        assert_eq!(transpose(&t, 3, 2), values);
    }

    #[test]
    fn a_state_round_trips_through_its_record_and_a_truncated_one_is_refused() {
        let optim = AdamW8bit {
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-8,
            weight_decay: 0.0,
            float_moments: false,
            hf_transposed: false,
        };
        let mut state = optim.initial_state(MIN_8BIT_SIZE + 3);
        let mut param = vec![0.5; MIN_8BIT_SIZE + 3];
        let grad: Vec<f32> = (0..param.len()).map(|i| (i as f32).sin()).collect();
        optim.update(1e-3, &mut param, &grad, &mut state);
        assert!(matches!(state.moments, Moments::Blockwise { .. }));
        let mut sink = StateSink::default();
        state.state_flatten("7", &mut sink);
        let device = Device::default();
        let source = |drop_last_block: bool| {
            let mut src = StateSource::new(sink.scalars.iter().cloned().collect());
            for (name, data) in &sink.tensors {
                let data = if drop_last_block && name.ends_with("v_absmax") {
                    let mut values = data.clone().try_into_vec::<f32>().unwrap();
                    values.pop();
                    let len = values.len();
                    TensorData::new(values, [len])
                } else {
                    data.clone()
                };
                src.insert_tensor(name.clone(), data);
            }
            src
        };
        let restored = AdamW8bitState::state_unflatten("7", &mut source(false), &device);
        assert_eq!(restored.as_ref(), Some(&state));
        assert_eq!(
            AdamW8bitState::state_unflatten("7", &mut source(true), &device),
            None
        );
    }
}
