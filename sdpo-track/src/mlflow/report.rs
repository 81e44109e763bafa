//! What an MLflow run delivered, and the one warning that says what it did not.

/// What the MLflow sink could not deliver by the end of the run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    /// The tracking server.
    pub server: String,
    /// The run's id and experiment id, once created (or reopened).
    pub run: Option<(String, String)>,
    /// Metric values not delivered.
    pub metrics: usize,
    /// The lowest and highest step among them.
    pub metric_steps: Option<(i64, i64)>,
    /// Parameters not delivered.
    pub params: usize,
    /// Tags not delivered.
    pub tags: usize,
    /// Artifacts not uploaded.
    pub artifacts: usize,
    /// The run's end (its final status) was not recorded.
    pub end: bool,
    /// Why, in the order the reasons arose (each once).
    pub reasons: Vec<String>,
}

impl DeliveryReport {
    /// A report for `server` with nothing missing.
    pub fn new(server: &str) -> Self {
        Self {
            server: server.to_string(),
            ..Self::default()
        }
    }

    /// Whether everything reached the server.
    pub fn complete(&self) -> bool {
        self.metrics == 0
            && self.params == 0
            && self.tags == 0
            && self.artifacts == 0
            && !self.end
            && self.run.is_some()
    }

    /// Adds a reason (once).
    pub(crate) fn reason(&mut self, reason: impl Into<String>) {
        let reason = reason.into();
        if !self.reasons.contains(&reason) {
            self.reasons.push(reason);
        }
    }

    /// Counts metric values at `steps` as undelivered.
    pub(crate) fn lost_metrics(&mut self, steps: impl Iterator<Item = i64>) {
        for step in steps {
            self.metrics += 1;
            self.metric_steps = Some(match self.metric_steps {
                None => (step, step),
                Some((lo, hi)) => (lo.min(step), hi.max(step)),
            });
        }
    }

    /// The run's page on the server, once it exists.
    pub fn run_url(&self) -> Option<String> {
        self.run.as_ref().map(|(run, experiment)| {
            format!("{}/#/experiments/{experiment}/runs/{run}", self.server)
        })
    }

    /// One line saying what was not delivered and why; `None` when everything was.
    pub fn warning(&self) -> Option<String> {
        if self.complete() {
            return None;
        }
        let plural =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let mut lost = Vec::new();
        if self.metrics > 0 {
            let steps = match self.metric_steps {
                Some((lo, hi)) if lo == hi => format!(" (step {lo})"),
                Some((lo, hi)) => format!(" (steps {lo}-{hi})"),
                None => String::new(),
            };
            lost.push(format!(
                "{}{steps}",
                plural(self.metrics, "metric value", "metric values")
            ));
        }
        if self.params > 0 {
            lost.push(plural(self.params, "parameter", "parameters"));
        }
        if self.tags > 0 {
            lost.push(plural(self.tags, "tag", "tags"));
        }
        if self.artifacts > 0 {
            lost.push(plural(self.artifacts, "artifact", "artifacts"));
        }
        if self.end {
            lost.push("the run's end".into());
        }
        let what = if self.run.is_none() {
            format!(
                "the run was never created, so nothing reached it ({})",
                lost.join(", ")
            )
        } else {
            format!("not delivered: {}", lost.join(", "))
        };
        Some(format!(
            "warning: MLflow at {}: {what}; {}. metrics.jsonl has every metric.",
            self.server,
            if self.reasons.is_empty() {
                "no reason recorded".to_string()
            } else {
                self.reasons.join("; ")
            }
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_names_every_loss_and_reason() {
        let mut report = DeliveryReport::new("http://h:5000");
        report.run = Some(("r1".into(), "7".into()));
        assert_eq!(report.warning(), None);
        assert_eq!(
            report.run_url().as_deref(),
            Some("http://h:5000/#/experiments/7/runs/r1")
        );
        report.lost_metrics([3, 1, 2].into_iter());
        report.artifacts = 1;
        report.end = true;
        report.reason("runs/log-batch: connection refused");
        report.reason("runs/log-batch: connection refused");
        assert_eq!(
            report.warning().unwrap(),
            "warning: MLflow at http://h:5000: not delivered: 3 metric values (steps 1-3), \
             1 artifact, the run's end; runs/log-batch: connection refused. metrics.jsonl has \
             every metric."
        );
        report.run = None;
        assert!(
            report
                .warning()
                .unwrap()
                .contains("the run was never created, so nothing reached it")
        );
    }
}
