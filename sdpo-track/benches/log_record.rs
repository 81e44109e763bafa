//! What one logged record costs the training thread with `report_to = ["tensorboard",
//! "mlflow"]`: the TensorBoard scalars written and flushed, the MLflow values handed to the
//! background thread (here a server that is down, so that thread keeps retrying meanwhile). A
//! record of 20 metrics, as an SDPO training log has.
//!
//! `cargo bench -p sdpo-track --bench log_record` (docs/benchmarks.md has the figures).

use std::collections::BTreeMap;

use divan::Bencher;
use sdpo_track::{ReportTo, RunInfo, TrackingPlan};

fn main() {
    divan::main();
}

#[divan::bench]
fn tensorboard_and_mlflow(bencher: Bencher) {
    let dir = tempfile::tempdir().expect("temp dir");
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        format!("http://{}", listener.local_addr().expect("its address"))
    };
    let env = move |key: &str| match key {
        "MLFLOW_TRACKING_URI" => Some(closed.clone()),
        _ => None,
    };
    let report_to = ReportTo::from_names(&["tensorboard", "mlflow"]).expect("names");
    let plan = TrackingPlan::resolve(&report_to, &env).expect("plan");
    let mut info = RunInfo::new(dir.path());
    info.logging_dir = Some(dir.path().join("tb"));
    let mut trackers = plan.start(&info, &env).expect("start");
    let record: BTreeMap<String, f64> = (0..20)
        .map(|i| (format!("metric/{i}"), i as f64 * 0.1))
        .collect();
    let mut step = 0u64;
    bencher.bench_local(|| {
        step += 1;
        trackers.log(step, step as f64 / 100.0, &record)
    });
}
