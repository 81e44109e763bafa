//! Learning-rate schedules, as transformers 5's `get_scheduler` computes them
//! (`transformers/optimization.py`), with the `lr_scheduler_kwargs` each one takes. Checked
//! step by step against transformers in `sdpo-train/tests/schedules.rs`.

use serde_json::{Map, Value};

use serde::{Deserialize, Serialize};

/// The learning-rate schedule (`lr_scheduler_type`), as transformers 5's `get_scheduler`
/// (options in `lr_scheduler_kwargs`; see [`crate::schedule`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedulerType {
    /// Linear warm-up, then linear decay to 0 at the last step.
    #[default]
    Linear,
    /// Linear warm-up, then half a cosine down to 0 at the last step (`num_cycles` waves).
    Cosine,
    /// Linear warm-up, then `num_cycles` cosines, each from the peak to 0 (hard restarts).
    CosineWithRestarts,
    /// Linear warm-up, then a polynomial decay (`power`) to `lr_end`.
    Polynomial,
    /// The same learning rate at every step (warm-up ignored, as in transformers).
    Constant,
    /// Linear warm-up, then constant.
    ConstantWithWarmup,
    /// Linear warm-up, then `1 / sqrt` decay with `timescale`.
    InverseSqrt,
    /// Linear warm-up, then a cosine down to `min_lr` (or `min_lr_rate` of the peak).
    CosineWithMinLr,
    /// As `cosine_with_min_lr` with transformers' shifted warm-up (`warmup_lr_rate`).
    CosineWarmupWithMinLr,
    /// Warm-up, a stable phase, then `num_decay_steps` of decay (WSD).
    WarmupStableDecay,
}

impl LrSchedulerType {
    /// The name in a configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Linear => "linear",
            Self::Cosine => "cosine",
            Self::CosineWithRestarts => "cosine_with_restarts",
            Self::Polynomial => "polynomial",
            Self::Constant => "constant",
            Self::ConstantWithWarmup => "constant_with_warmup",
            Self::InverseSqrt => "inverse_sqrt",
            Self::CosineWithMinLr => "cosine_with_min_lr",
            Self::CosineWarmupWithMinLr => "cosine_warmup_with_min_lr",
            Self::WarmupStableDecay => "warmup_stable_decay",
        }
    }
}

/// The shape of a warm-up or decay phase of `warmup_stable_decay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ramp {
    /// Linear.
    Linear,
    /// Half a cosine.
    Cosine,
    /// `1 - sqrt(.)`.
    OneMinusSqrt,
}

impl Ramp {
    fn parse(key: &str, value: &str) -> Result<Self, String> {
        match value {
            "linear" => Ok(Self::Linear),
            "cosine" => Ok(Self::Cosine),
            "1-sqrt" => Ok(Self::OneMinusSqrt),
            other => Err(format!(
                "`{key}` = `{other}`: expected `linear`, `cosine` or `1-sqrt`"
            )),
        }
    }
}

/// The options of a schedule, from `lr_scheduler_kwargs` (transformers' defaults otherwise).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScheduleParams {
    /// Waves of the cosine (`cosine`, `cosine_with_min_lr`, ...: 0.5; `cosine_with_restarts`:
    /// restarts, 1).
    pub num_cycles: f64,
    /// The end learning rate of `polynomial` (1e-7).
    pub lr_end: f64,
    /// The power of `polynomial` (1.0).
    pub power: f64,
    /// `inverse_sqrt`'s time scale (unset: the warm-up steps, or 10000 without warm-up).
    pub timescale: Option<f64>,
    /// The floor of the `cosine*_with_min_lr` schedules as a fraction of the peak.
    pub min_lr_rate: f64,
    /// `cosine_warmup_with_min_lr`'s warm-up start as a fraction of the peak (unset: the
    /// warm-up starts at `1 / warmup` of it).
    pub warmup_lr_rate: Option<f64>,
    /// `warmup_stable_decay`: decay steps, stable steps (unset: what remains), ramps, floor.
    pub num_decay_steps: i64,
    /// `warmup_stable_decay`'s stable steps (unset: total - warm-up - decay).
    pub num_stable_steps: Option<i64>,
    /// `warmup_stable_decay`'s warm-up shape.
    pub warmup_type: Ramp,
    /// `warmup_stable_decay`'s decay shape.
    pub decay_type: Ramp,
    /// `warmup_stable_decay`'s floor as a fraction of the peak.
    pub min_lr_ratio: f64,
}

impl Default for ScheduleParams {
    fn default() -> Self {
        Self {
            num_cycles: 0.5,
            lr_end: 1e-7,
            power: 1.0,
            timescale: None,
            min_lr_rate: 0.0,
            warmup_lr_rate: None,
            num_decay_steps: 0,
            num_stable_steps: None,
            warmup_type: Ramp::Linear,
            decay_type: Ramp::Cosine,
            min_lr_ratio: 0.0,
        }
    }
}

/// The keys each schedule takes in `lr_scheduler_kwargs` (transformers' keyword arguments).
fn allowed_kwargs(kind: LrSchedulerType) -> &'static [&'static str] {
    use LrSchedulerType as K;
    match kind {
        K::Linear | K::Constant | K::ConstantWithWarmup => &[],
        K::Cosine | K::CosineWithRestarts => &["num_cycles"],
        K::Polynomial => &["lr_end", "power"],
        K::InverseSqrt => &["timescale"],
        K::CosineWithMinLr => &["num_cycles", "min_lr", "min_lr_rate"],
        K::CosineWarmupWithMinLr => &["num_cycles", "min_lr", "min_lr_rate", "warmup_lr_rate"],
        K::WarmupStableDecay => &[
            "num_decay_steps",
            "num_stable_steps",
            "warmup_type",
            "decay_type",
            "min_lr_ratio",
            "num_cycles",
        ],
    }
}

impl ScheduleParams {
    /// Reads `lr_scheduler_kwargs` for `kind` and peak learning rate `lr`; refuses what
    /// transformers refuses (an argument the schedule does not take, `min_lr` with
    /// `min_lr_rate`, neither for the min-lr schedules, `lr_end >= lr`, no `num_decay_steps`,
    /// an unknown ramp), naming the key.
    pub fn from_kwargs(
        kind: LrSchedulerType,
        lr: f64,
        kwargs: Option<&Map<String, Value>>,
    ) -> Result<Self, String> {
        use LrSchedulerType as K;
        let empty = Map::new();
        let kwargs = kwargs.unwrap_or(&empty);
        let allowed = allowed_kwargs(kind);
        if let Some(key) = kwargs.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(format!(
                "`{key}` is not an argument of `{}` (it takes {})",
                kind.as_str(),
                if allowed.is_empty() {
                    "none".to_string()
                } else {
                    allowed
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ));
        }
        let number = |key: &str| -> Result<Option<f64>, String> {
            match kwargs.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_f64()
                    .filter(|x| x.is_finite())
                    .map(Some)
                    .ok_or_else(|| format!("`{key}` must be a number, got {v}")),
            }
        };
        let text = |key: &str| -> Result<Option<&str>, String> {
            match kwargs.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.as_str())),
                Some(v) => Err(format!("`{key}` must be a string, got {v}")),
            }
        };
        let mut p = Self::default();
        if kind == K::CosineWithRestarts {
            p.num_cycles = 1.0;
        }
        if let Some(v) = number("num_cycles")? {
            p.num_cycles = v;
        }
        if let Some(v) = number("lr_end")? {
            p.lr_end = v;
        }
        if let Some(v) = number("power")? {
            p.power = v;
        }
        p.timescale = number("timescale")?;
        p.warmup_lr_rate = number("warmup_lr_rate")?;
        if matches!(kind, K::CosineWithMinLr | K::CosineWarmupWithMinLr) {
            p.min_lr_rate = match (number("min_lr")?, number("min_lr_rate")?) {
                (Some(_), Some(_)) => {
                    return Err("set only one of `min_lr` and `min_lr_rate`".into());
                }
                (Some(min_lr), None) => min_lr / lr,
                (None, Some(rate)) => rate,
                (None, None) => {
                    return Err(format!(
                        "`{}` needs `min_lr` or `min_lr_rate`",
                        kind.as_str()
                    ));
                }
            };
        }
        if kind == K::Polynomial && p.lr_end >= lr {
            return Err(format!(
                "`lr_end` ({}) must be smaller than learning_rate ({lr})",
                p.lr_end
            ));
        }
        if kind == K::WarmupStableDecay {
            let whole = |key: &str| -> Result<Option<i64>, String> {
                match number(key)? {
                    None => Ok(None),
                    Some(v) if v.fract() == 0.0 => Ok(Some(v as i64)),
                    Some(v) => Err(format!("`{key}` must be a whole number of steps, got {v}")),
                }
            };
            p.num_decay_steps =
                whole("num_decay_steps")?.ok_or("`warmup_stable_decay` needs `num_decay_steps`")?;
            p.num_stable_steps = whole("num_stable_steps")?;
            if let Some(v) = text("warmup_type")? {
                p.warmup_type = Ramp::parse("warmup_type", v)?;
            }
            if let Some(v) = text("decay_type")? {
                p.decay_type = Ramp::parse("decay_type", v)?;
            }
            if let Some(v) = number("min_lr_ratio")? {
                p.min_lr_ratio = v;
            }
        }
        Ok(p)
    }
}

/// The learning rate at every optimizer step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    /// The schedule's shape.
    pub kind: LrSchedulerType,
    /// The peak learning rate.
    pub peak: f64,
    /// Warm-up steps (resolved: a ratio is already steps here).
    pub warmup_steps: usize,
    /// Total optimizer steps.
    pub total_steps: usize,
    /// The schedule's options.
    pub params: ScheduleParams,
}

fn warmup_factor(step: f64, warmup: f64) -> f64 {
    step / warmup.max(1.0)
}

impl LrSchedule {
    /// The schedule of `kind` with default options (see [`ScheduleParams`]).
    pub fn new(kind: LrSchedulerType, peak: f64, warmup_steps: usize, total_steps: usize) -> Self {
        Self::with_params(
            kind,
            peak,
            warmup_steps,
            total_steps,
            ScheduleParams::default(),
        )
    }

    /// The schedule of `kind` with `params`.
    pub fn with_params(
        kind: LrSchedulerType,
        peak: f64,
        warmup_steps: usize,
        total_steps: usize,
        params: ScheduleParams,
    ) -> Self {
        Self {
            kind,
            peak,
            warmup_steps,
            total_steps,
            params,
        }
    }

    /// The learning rate used by optimizer step `step` (0-based): the peak times transformers'
    /// `lr_lambda(step)`.
    pub fn lr(&self, step: usize) -> f64 {
        self.peak * self.factor(step)
    }

    fn factor(&self, step: usize) -> f64 {
        use LrSchedulerType as K;
        let p = &self.params;
        let (s, w, n) = (
            step as f64,
            self.warmup_steps as f64,
            self.total_steps as f64,
        );
        let warming = step < self.warmup_steps;
        let progress = (s - w) / (n - w).max(1.0);
        match self.kind {
            K::Constant => 1.0,
            K::CosineWarmupWithMinLr => self.cosine_warmup_with_min_lr(s, w, n),
            K::WarmupStableDecay => self.wsd(step as i64),
            _ if warming => warmup_factor(s, w),
            K::ConstantWithWarmup => 1.0,
            K::Linear => ((n - s) / (n - w).max(1.0)).max(0.0),
            K::Cosine => (0.5
                * (1.0 + (std::f64::consts::PI * p.num_cycles * 2.0 * progress).cos()))
            .max(0.0),
            K::CosineWithMinLr => {
                let cos =
                    0.5 * (1.0 + (std::f64::consts::PI * p.num_cycles * 2.0 * progress).cos());
                (cos * (1.0 - p.min_lr_rate) + p.min_lr_rate).max(0.0)
            }
            K::CosineWithRestarts => {
                if progress >= 1.0 {
                    0.0
                } else {
                    let phase = (p.num_cycles * progress) % 1.0;
                    (0.5 * (1.0 + (std::f64::consts::PI * phase).cos())).max(0.0)
                }
            }
            K::Polynomial => {
                if s > n {
                    p.lr_end / self.peak
                } else {
                    let remaining = 1.0 - (s - w) / (n - w);
                    ((self.peak - p.lr_end) * remaining.powf(p.power) + p.lr_end) / self.peak
                }
            }
            K::InverseSqrt => {
                let timescale =
                    p.timescale
                        .unwrap_or(if self.warmup_steps > 0 { w } else { 10_000.0 });
                1.0 / ((s + timescale - w) / timescale).sqrt()
            }
        }
    }

    /// transformers' `_get_cosine_with_min_lr_schedule_with_warmup_lr_rate_lambda`: its
    /// warm-up and progress count the current step as done.
    fn cosine_warmup_with_min_lr(&self, s: f64, w: f64, n: f64) -> f64 {
        let p = &self.params;
        if s < w {
            return match p.warmup_lr_rate {
                None => (s + 1.0) / w.max(1.0),
                Some(rate) => rate + (1.0 - rate) * s / (w - 1.0).max(1.0),
            };
        }
        let progress = (s - w + 1.0) / (n - w).max(1.0);
        let cos = 0.5 * (1.0 + (std::f64::consts::PI * p.num_cycles * 2.0 * progress).cos());
        (cos * (1.0 - p.min_lr_rate) + p.min_lr_rate).max(0.0)
    }

    /// transformers' `_get_wsd_scheduler_lambda` (integer phase bounds, so a stable phase that
    /// comes out negative behaves as there).
    fn wsd(&self, step: i64) -> f64 {
        let p = &self.params;
        let warmup = self.warmup_steps as i64;
        let stable = p
            .num_stable_steps
            .unwrap_or(self.total_steps as i64 - warmup - p.num_decay_steps);
        let ramp = |kind: Ramp, progress: f64, rising: bool| match (kind, rising) {
            (Ramp::Linear, true) => progress,
            (Ramp::Linear, false) => 1.0 - progress,
            (Ramp::Cosine, true) => 0.5 * (1.0 - (std::f64::consts::PI * progress).cos()),
            (Ramp::Cosine, false) => {
                0.5 * (1.0 + (std::f64::consts::PI * p.num_cycles * 2.0 * progress).cos())
            }
            (Ramp::OneMinusSqrt, true) => 1.0 - (1.0 - progress).sqrt(),
            (Ramp::OneMinusSqrt, false) => 1.0 - progress.sqrt(),
        };
        let floor = |factor: f64| (factor * (1.0 - p.min_lr_ratio) + p.min_lr_ratio).max(0.0);
        if step < warmup {
            let progress = step as f64 / (warmup.max(1)) as f64;
            return floor(ramp(p.warmup_type, progress, true));
        }
        if step < warmup + stable {
            return 1.0;
        }
        if step < warmup + stable + p.num_decay_steps {
            let progress = (step - warmup - stable) as f64 / (p.num_decay_steps.max(1)) as f64;
            return floor(ramp(p.decay_type, progress, false));
        }
        p.min_lr_ratio
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_warms_up_then_decays_to_zero() {
        let s = LrSchedule::new(LrSchedulerType::Linear, 1.0, 2, 10);
        let lrs: Vec<f64> = (0..10).map(|k| s.lr(k)).collect();
        assert_eq!(lrs[0], 0.0);
        assert_eq!(lrs[1], 0.5);
        assert_eq!(lrs[2], 1.0);
        assert!((lrs[9] - 1.0 / 8.0).abs() < 1e-12);
        assert!(lrs.windows(2).skip(2).all(|w| w[1] < w[0]));
    }

    #[test]
    fn kwargs_are_checked_per_schedule() {
        let kwargs = |json: &str| serde_json::from_str::<Map<String, Value>>(json).unwrap();
        let err = ScheduleParams::from_kwargs(
            LrSchedulerType::Linear,
            1e-6,
            Some(&kwargs(r#"{"num_cycles": 2}"#)),
        )
        .unwrap_err();
        assert!(
            err.contains("`num_cycles`") && err.contains("takes none"),
            "{err}"
        );
        let p = ScheduleParams::from_kwargs(
            LrSchedulerType::CosineWithMinLr,
            1e-6,
            Some(&kwargs(r#"{"min_lr": 1e-7}"#)),
        )
        .unwrap();
        assert!((p.min_lr_rate - 0.1).abs() < 1e-12);
    }
}
