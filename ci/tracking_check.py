"""Reads a run's TensorBoard event files with TensorBoard's own reader and its MLflow run with
MLflow's Python client, and checks both against the run's metrics.jsonl (ci/tracking.sh).

    tracking_check.py RUN_DIR TRACKING_URI EXPERIMENT RUN_NAME

TensorBoard: every value of every record (plus `epoch`, as transformers logs it) is a scalar
under transformers' tag (`loss` -> `train/loss`, `eval_loss` -> `eval/loss`) at the record's
step, equal to the value rounded to float32 (what `SummaryWriter.add_scalar` stores); no other
scalar exists; the configuration is the `args` text summary; the custom-scalars layout is there.

MLflow: one finished run with that name in the experiment; its parameters are the
configuration; every metric's history (step, value) equals metrics.jsonl's; the artifacts hold
report.html (byte for byte), metrics.jsonl and the final model under model/.
"""

import json
import math
import sys
from pathlib import Path

import numpy as np


def fail(message):
    print(f"tracking-check: FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def tag_for(name):
    if name.startswith("eval_"):
        return "eval/" + name[len("eval_"):]
    if name.startswith("test_"):
        return "test/" + name[len("test_"):]
    return "train/" + name


def read_records(run_dir):
    records = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        if line.strip():
            records.append(json.loads(line))
    if not records:
        fail("metrics.jsonl has no records")
    return records


def same(a, b):
    if a is None or b is None:
        return (a is None or math.isnan(a)) and (b is None or math.isnan(b))
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b


def expected_scalars(records):
    """(tag, step) -> float32 value, for every metric and `epoch` of every record."""
    out = {}
    for r in records:
        step = r["step"]
        for key, value in r.items():
            if key == "step":
                continue
            value = float("nan") if value is None else value
            out.setdefault(tag_for(key), []).append((step, float(np.float32(value))))
    return out


def check_tensorboard(run_dir, records, config):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    dirs = sorted({p.parent for p in (run_dir / "runs").glob("*/events.out.tfevents.*")})
    if len(dirs) != 1:
        fail(f"expected one TensorBoard directory under {run_dir}/runs, found {dirs}")
    acc = EventAccumulator(str(dirs[0]), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    expected = expected_scalars(records)
    tags = set(acc.Tags()["scalars"])
    if tags != set(expected):
        fail(f"scalar tags differ: extra {sorted(tags - set(expected))}, "
             f"missing {sorted(set(expected) - tags)}")
    count = 0
    for tag, points in expected.items():
        got = [(e.step, e.value) for e in acc.Scalars(tag)]
        if len(got) != len(points):
            fail(f"{tag}: {len(got)} scalars in TensorBoard, {len(points)} in metrics.jsonl")
        for (gs, gv), (es, ev) in zip(got, points):
            if gs != es or not same(gv, ev):
                fail(f"{tag}: TensorBoard has ({gs}, {gv}), metrics.jsonl ({es}, {ev})")
            count += 1
    texts = acc.Tags()["tensors"]
    if "args/text_summary" not in texts or "custom_scalars__config__" not in texts:
        fail(f"text summary or layout missing: {texts}")
    args = acc.Tensors("args/text_summary")[0].tensor_proto.string_val[0].decode()
    if json.loads(args) != config:
        fail("the `args` text summary is not the run's configuration")
    print(f"tracking-check: TensorBoard ({dirs[0].name}): {count} scalars in {len(tags)} tags "
          f"equal metrics.jsonl; configuration text and chart layout present")


def same_param(text, value):
    """A parameter as MLflow stores it (text) against the configuration's JSON value."""
    if text is None:
        return False
    if value is None or isinstance(value, (bool, str)):
        words = {None: "None", True: "True", False: "False"}
        return text == (value if isinstance(value, str) else words[value])
    if isinstance(value, (int, float)):
        return float(text) == float(value)
    return json.loads(text) == value


def check_mlflow(run_dir, records, config, uri, experiment, run_name):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        fail(f"no experiment {experiment!r} on {uri}")
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`mlflow.runName` = '{run_name}'")
    if len(runs) != 1:
        fail(f"expected one run named {run_name!r}, found {len(runs)}")
    run = runs[0]
    if run.info.status != "FINISHED":
        fail(f"run status {run.info.status}")
    params = run.data.params
    for key, value in config.items():
        if not same_param(params.get(key), value):
            fail(f"parameter {key}: MLflow {params.get(key)!r}, configuration {value!r}")
    expected = {}
    for r in records:
        for key, value in r.items():
            if key == "step":
                continue
            expected.setdefault(key, []).append((r["step"], float("nan") if value is None else value))
    if set(run.data.metrics) != set(expected):
        fail(f"metric keys differ: {sorted(set(run.data.metrics) ^ set(expected))}")
    count = 0
    for key, points in expected.items():
        history = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: (m.step, m.timestamp))
        got = [(m.step, m.value) for m in history]
        if len(got) != len(points):
            fail(f"{key}: {len(got)} values in MLflow, {len(points)} in metrics.jsonl")
        for (gs, gv), (es, ev) in zip(got, sorted(points, key=lambda p: p[0])):
            if gs != es or not same(gv, ev):
                fail(f"{key}: MLflow has ({gs}, {gv}), metrics.jsonl ({es}, {ev})")
            count += 1
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    model = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    for needed in ["report.html", "metrics.jsonl", "model"]:
        if needed not in top:
            fail(f"artifact {needed} missing: {sorted(top)}")
    for needed in ["model/model.safetensors", "model/config.json", "model/tokenizer.json"]:
        if needed not in model:
            fail(f"artifact {needed} missing: {sorted(model)}")
    local = client.download_artifacts(run.info.run_id, "report.html", str(run_dir / "downloaded"))
    if Path(local).read_bytes() != (run_dir / "report.html").read_bytes():
        fail("the report.html artifact differs from the run's")
    print(f"tracking-check: MLflow run {run.info.run_id} ({run_name}, FINISHED): "
          f"{len(params)} parameters, {count} metric values equal metrics.jsonl, "
          f"{len(model)} model artifacts, report.html identical")


def main(argv):
    if len(argv) != 4:
        fail(__doc__)
    run_dir, uri, experiment, run_name = Path(argv[0]), argv[1], argv[2], argv[3]
    records = read_records(run_dir)
    config = json.loads((run_dir / "run_config.json").read_text())
    check_tensorboard(run_dir, records, config)
    check_mlflow(run_dir, records, config, uri, experiment, run_name)


if __name__ == "__main__":
    main(sys.argv[1:])
