//! The running mean of the rewards that `bco_pair` uses as its shift (TRL's `RunningMoments`).

use serde::{Deserialize, Serialize};

/// Running mean and variance of a stream of scalars, updated exactly as TRL's `RunningMoments`
/// does for `bco_pair`: one scalar per call, arithmetic in float32 where torch uses float32.
///
/// The state belongs to the trainer (it is saved in checkpoints so a resumed run continues
/// with the same shift).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RunningMoments {
    /// The running mean (the shift `bco_pair` subtracts from the rewards).
    pub mean: f64,
    /// The running (biased) variance.
    pub var: f64,
    /// The number of values seen, starting at TRL's `1e-24`.
    pub count: f64,
}

impl Default for RunningMoments {
    fn default() -> Self {
        Self {
            mean: 0.0,
            var: 1.0,
            count: 1e-24,
        }
    }
}

impl RunningMoments {
    /// The running standard deviation (unbiased): 1 before the first update and `+inf` after
    /// it, as in TRL.
    pub fn std(&self) -> f64 {
        if self.count < 1.0 {
            return 1.0;
        }
        let total = self.count as f32;
        let previous = (self.count - 1.0) as f32;
        ((self.var as f32 * total) / previous).sqrt() as f64
    }

    /// Adds one value. torch evaluates this with float32 tensors and Python floats; the
    /// roundings below are the ones it makes, so the mean matches TRL to the last f32 bit.
    pub fn update(&mut self, value: f64) {
        let value = value as f32;
        let delta = value - self.mean as f32;
        let total = self.count + 1.0;
        // old_sum = var * count + delta^2 * count * 1 / total (the new value's own variance is 0)
        let correction = delta * delta * self.count as f32 / total as f32;
        let old_sum = (self.var * self.count) as f32 + correction;
        self.mean += f64::from(delta / total as f32);
        self.var = f64::from(old_sum / total as f32);
        self.count = total;
    }
}
