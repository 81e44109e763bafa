//! Learning-rate schedules, as transformers' `get_scheduler` computes them.

use crate::config::LrSchedulerType;

/// The learning rate at every optimizer step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    /// The schedule's shape.
    pub kind: LrSchedulerType,
    /// The peak learning rate.
    pub peak: f64,
    /// Warm-up steps.
    pub warmup_steps: usize,
    /// Total optimizer steps.
    pub total_steps: usize,
}

impl LrSchedule {
    /// The schedule; `warmup_steps > 0` wins over `warmup_ratio` (as in transformers, the ratio
    /// is rounded up).
    pub fn new(
        kind: LrSchedulerType,
        peak: f64,
        warmup_steps: usize,
        warmup_ratio: f64,
        total_steps: usize,
    ) -> Self {
        let warmup_steps = if warmup_steps > 0 {
            warmup_steps
        } else {
            (warmup_ratio * total_steps as f64).ceil() as usize
        };
        Self {
            kind,
            peak,
            warmup_steps,
            total_steps,
        }
    }

    /// The learning rate used by optimizer step `step` (0-based).
    pub fn lr(&self, step: usize) -> f64 {
        let (s, w, n) = (
            step as f64,
            self.warmup_steps as f64,
            self.total_steps as f64,
        );
        let warming = step < self.warmup_steps && self.kind != LrSchedulerType::Constant;
        let factor = if warming {
            s / w.max(1.0)
        } else {
            match self.kind {
                LrSchedulerType::Constant | LrSchedulerType::ConstantWithWarmup => 1.0,
                LrSchedulerType::Linear => ((n - s) / (n - w).max(1.0)).max(0.0),
                LrSchedulerType::Cosine => {
                    let progress = (s - w) / (n - w).max(1.0);
                    (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
                }
            }
        };
        self.peak * factor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_warms_up_then_decays_to_zero() {
        let s = LrSchedule::new(LrSchedulerType::Linear, 1.0, 2, 0.0, 10);
        let lrs: Vec<f64> = (0..10).map(|k| s.lr(k)).collect();
        assert_eq!(lrs[0], 0.0);
        assert_eq!(lrs[1], 0.5);
        assert_eq!(lrs[2], 1.0);
        assert!((lrs[9] - 1.0 / 8.0).abs() < 1e-12);
        assert!(lrs.windows(2).skip(2).all(|w| w[1] < w[0]));
    }

    #[test]
    fn cosine_and_constant() {
        let c = LrSchedule::new(LrSchedulerType::Cosine, 2.0, 0, 0.0, 4);
        assert_eq!(c.lr(0), 2.0);
        assert!((c.lr(2) - 1.0).abs() < 1e-12);
        let k = LrSchedule::new(LrSchedulerType::Constant, 3.0, 5, 0.0, 10);
        assert_eq!(k.lr(0), 3.0);
        let kw = LrSchedule::new(LrSchedulerType::ConstantWithWarmup, 3.0, 0, 0.5, 10);
        assert_eq!(kw.warmup_steps, 5);
        assert_eq!(kw.lr(0), 0.0);
        assert_eq!(kw.lr(7), 3.0);
    }
}
