//! The background thread that talks to the tracking server, so that training never waits on
//! the network: it creates the run, then delivers tags, parameters, metrics, artifacts and the
//! run's end in that order, keeping everything that failed for a later attempt.
//!
//! Failures that may pass (no connection, a timeout, HTTP 5xx / 408 / 429) are retried with a
//! growing pause (1 s doubling to 30 s while training runs). A refusal (another 4xx, an answer
//! that is not MLflow's) drops that one request and records why. When the run finishes, the
//! thread keeps delivering until the queue is empty, three attempts in a row have failed, or
//! `SDPO_MLFLOW_FINISH_TIMEOUT` has passed; what is left is counted in the
//! [`DeliveryReport`].

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use crate::mlflow::DeliveryReport;
use crate::mlflow::client::{CallError, MetricValue, RestClient, RunRef, proxied_artifact_root};
use crate::mlflow::settings::MlflowSettings;
use crate::run::{Artifact, RunStatus};

/// What the training side sends.
pub(crate) enum Message {
    /// Metric values of one log.
    Metrics(Vec<MetricValue>),
    /// The run ended: upload these, then record the status.
    Finish {
        status: RunStatus,
        artifacts: Vec<Artifact>,
    },
}

/// What to deliver before the first metric.
pub(crate) struct Opening {
    pub run_name: Option<String>,
    pub tags: Vec<(String, String)>,
    pub params: Vec<(String, String)>,
    pub start_time: i64,
}

/// MLflow's `log-batch` limits.
const MAX_METRICS_PER_BATCH: usize = 1000;
const MAX_PAIRS_PER_BATCH: usize = 100;
/// Metric values kept while the server is unreachable; older ones are dropped beyond this.
pub(crate) const MAX_BUFFERED_METRICS: usize = 1_000_000;
/// Attempts in a row that may fail once the run has finished.
const FINISH_ATTEMPTS: u32 = 3;

pub(crate) struct Worker {
    client: RestClient,
    settings: MlflowSettings,
    run_name: Option<String>,
    start_time: i64,
    run: Option<RunRef>,
    tags: VecDeque<(String, String)>,
    params: VecDeque<(String, String)>,
    metrics: VecDeque<MetricValue>,
    artifacts: VecDeque<Artifact>,
    end: Option<RunStatus>,
    deadline: Option<Instant>,
    next_attempt: Instant,
    failures: u32,
    /// The last error of a request that will be retried.
    pending_reason: Option<String>,
    /// Given up: nothing more is sent, later metrics are counted as undelivered.
    abandoned: bool,
    /// The training side dropped its end of the channel.
    closed: bool,
    report: DeliveryReport,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Worker {
    pub fn new(client: RestClient, settings: MlflowSettings, opening: Opening) -> Self {
        let report = DeliveryReport::new(&settings.tracking_uri);
        Self {
            client,
            settings,
            run_name: opening.run_name,
            start_time: opening.start_time,
            run: None,
            tags: opening.tags.into(),
            params: opening.params.into(),
            metrics: VecDeque::new(),
            artifacts: VecDeque::new(),
            end: None,
            deadline: None,
            next_attempt: Instant::now(),
            failures: 0,
            pending_reason: None,
            abandoned: false,
            closed: false,
            report,
        }
    }

    /// Records parameters that are never sent (MLflow would refuse them), with `reason`.
    pub fn refuse_params(&mut self, n: usize, reason: String) {
        self.report.params += n;
        self.report.reason(reason);
    }

    /// Runs until the run has finished and everything is delivered or given up.
    pub fn run(mut self, rx: Receiver<Message>) -> DeliveryReport {
        loop {
            // Take whatever is waiting without blocking.
            loop {
                match rx.try_recv() {
                    Ok(message) => self.accept(message),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        self.disconnected();
                        break;
                    }
                }
            }
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                let limit = self.settings.finish_timeout.as_secs_f64();
                self.give_up(format!(
                    "the server did not take them within SDPO_MLFLOW_FINISH_TIMEOUT = {limit} s"
                ));
            }
            if self.is_done() {
                return self.report;
            }
            let wait = if self.has_work() {
                self.next_attempt.saturating_duration_since(Instant::now())
            } else {
                Duration::from_secs(3600)
            };
            let wait = match self.deadline {
                Some(d) => wait.min(d.saturating_duration_since(Instant::now())),
                None => wait,
            };
            if !wait.is_zero() && self.closed {
                std::thread::sleep(wait);
                continue;
            }
            if !wait.is_zero() {
                match rx.recv_timeout(wait) {
                    Ok(message) => self.accept(message),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => self.disconnected(),
                }
                continue;
            }
            self.attempt();
        }
    }

    fn accept(&mut self, message: Message) {
        match message {
            Message::Metrics(values) if self.abandoned => {
                self.report.lost_metrics(values.iter().map(|m| m.step));
            }
            Message::Metrics(values) => {
                self.metrics.extend(values);
                let excess = self.metrics.len().saturating_sub(MAX_BUFFERED_METRICS);
                if excess > 0 {
                    let dropped: Vec<i64> = self.metrics.drain(..excess).map(|m| m.step).collect();
                    self.report.lost_metrics(dropped.into_iter());
                    self.report.reason(format!(
                        "the buffer of {MAX_BUFFERED_METRICS} metric values filled while the \
                         server was unreachable"
                    ));
                }
            }
            Message::Finish { artifacts, .. } if self.abandoned => {
                self.report.artifacts += artifacts.len();
                self.report.end = true;
                self.deadline.get_or_insert_with(Instant::now);
            }
            Message::Finish { status, artifacts } => {
                if self.deadline.is_none() {
                    self.artifacts.extend(artifacts);
                    self.end = Some(status);
                    self.deadline = Some(Instant::now() + self.settings.finish_timeout);
                    // A server that was down may be back: try again now.
                    self.next_attempt = Instant::now();
                    self.failures = 0;
                }
            }
        }
    }

    /// The training side went away without finishing (it stopped): end the run as failed.
    fn disconnected(&mut self) {
        self.closed = true;
        if self.deadline.is_none() {
            self.accept(Message::Finish {
                status: RunStatus::Failed,
                artifacts: Vec::new(),
            });
        }
    }

    fn has_work(&self) -> bool {
        !self.abandoned
            && (self.run.is_none()
                || !self.tags.is_empty()
                || !self.params.is_empty()
                || !self.metrics.is_empty()
                || !self.artifacts.is_empty()
                || self.end.is_some())
    }

    fn is_done(&self) -> bool {
        self.deadline.is_some() && !self.has_work()
    }

    /// One request: the next thing in the order of delivery.
    fn attempt(&mut self) {
        let result = match &self.run {
            None => self.open_run(),
            Some(run) => {
                let run = run.clone();
                self.deliver(&run)
            }
        };
        match result {
            Ok(()) => {
                self.failures = 0;
                self.pending_reason = None;
            }
            Err(CallError::Transient(reason)) => self.failed(reason),
            Err(CallError::Permanent(reason)) if self.run.is_none() => {
                self.give_up(format!("the run could not be created: {reason}"));
            }
            Err(CallError::Permanent(reason)) => self.report.reason(reason),
        }
    }

    fn open_run(&mut self) -> Result<(), CallError> {
        let run = match &self.settings.run_id {
            Some(id) => self.client.reopen_run(id)?,
            None => {
                let experiment = self
                    .client
                    .experiment_id(self.settings.experiment_name.as_deref())?;
                self.client.create_run(
                    &experiment,
                    self.run_name.as_deref(),
                    &[],
                    self.start_time,
                )?
            }
        };
        self.report.run = Some((run.run_id.clone(), run.experiment_id.clone()));
        self.run = Some(run);
        Ok(())
    }

    /// Delivers the next item; a refused one is dropped and counted before the error returns.
    fn deliver(&mut self, run: &RunRef) -> Result<(), CallError> {
        let id = &run.run_id;
        if !self.tags.is_empty() {
            let n = self.tags.len().min(MAX_PAIRS_PER_BATCH);
            let chunk: Vec<(String, String)> = self.tags.iter().take(n).cloned().collect();
            let result = self.client.log_batch(id, &[], &[], &chunk);
            if settled(&result) {
                self.tags.drain(..n);
            }
            if refused(&result) {
                self.report.tags += n;
            }
            return result;
        }
        if !self.params.is_empty() {
            let n = self.params.len().min(MAX_PAIRS_PER_BATCH);
            let chunk: Vec<(String, String)> = self.params.iter().take(n).cloned().collect();
            let result = self.client.log_batch(id, &[], &chunk, &[]);
            if settled(&result) {
                self.params.drain(..n);
            }
            if refused(&result) {
                self.report.params += n;
            }
            return result;
        }
        if !self.metrics.is_empty() {
            let n = self.metrics.len().min(MAX_METRICS_PER_BATCH);
            let chunk: Vec<MetricValue> = self.metrics.iter().take(n).cloned().collect();
            let result = self.client.log_batch(id, &chunk, &[], &[]);
            if settled(&result) {
                self.metrics.drain(..n);
            }
            if refused(&result) {
                self.report.lost_metrics(chunk.iter().map(|m| m.step));
            }
            return result;
        }
        if let Some(artifact) = self.artifacts.front().cloned() {
            let Some(root) = proxied_artifact_root(&run.artifact_uri) else {
                self.report.artifacts += self.artifacts.len();
                self.artifacts.clear();
                return Err(CallError::Permanent(format!(
                    "artifacts not uploaded: the server stores them at `{}`, which it does not \
                     serve (start it with `mlflow server --serve-artifacts`)",
                    run.artifact_uri
                )));
            };
            let result = self.client.upload(&root, &artifact);
            if settled(&result) {
                self.artifacts.pop_front();
            }
            if refused(&result) {
                self.report.artifacts += 1;
            }
            return result;
        }
        if let Some(status) = self.end {
            self.client.end_run(id, status.mlflow_name(), now_ms())?;
            self.end = None;
        }
        Ok(())
    }

    fn failed(&mut self, reason: String) {
        self.failures += 1;
        let pause = if self.deadline.is_some() {
            Duration::from_millis(200 << (self.failures - 1).min(4))
        } else {
            Duration::from_secs(1 << (self.failures - 1).min(5)).min(Duration::from_secs(30))
        };
        self.next_attempt = Instant::now() + pause;
        if self.deadline.is_some() && self.failures >= FINISH_ATTEMPTS {
            self.give_up(reason);
        } else {
            self.pending_reason = Some(reason);
        }
    }

    /// Counts everything still queued as undelivered, with `reason`.
    fn give_up(&mut self, reason: String) {
        if let Some(last) = self.pending_reason.take()
            && last != reason
            && !reason.contains(&last)
        {
            self.report.reason(format!("{reason} (last error: {last})"));
        } else {
            self.report.reason(reason);
        }
        self.report.tags += self.tags.len();
        self.report.params += self.params.len();
        self.report.artifacts += self.artifacts.len();
        let steps: Vec<i64> = self.metrics.iter().map(|m| m.step).collect();
        self.report.lost_metrics(steps.into_iter());
        self.report.end |= self.end.is_some();
        self.tags.clear();
        self.params.clear();
        self.metrics.clear();
        self.artifacts.clear();
        self.end = None;
        self.abandoned = true;
    }
}

/// Delivered, or refused for good: either way it leaves the queue.
fn settled(result: &Result<(), CallError>) -> bool {
    matches!(result, Ok(()) | Err(CallError::Permanent(_)))
}

/// Refused for good: it is counted as undelivered.
fn refused(result: &Result<(), CallError>) -> bool {
    matches!(result, Err(CallError::Permanent(_)))
}
