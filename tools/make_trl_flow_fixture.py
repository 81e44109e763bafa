#!/usr/bin/env python3
"""Writes fixtures/trl/flow.json: transformers 5.24's training-loop decisions — at which optimizer
steps it logs the training loss, evaluates and saves a checkpoint, which `checkpoint-N`
directories `save_total_limit` leaves, the best metric / step / checkpoint it tracks and the
checkpoint `load_best_model_at_end` loads — for the golden tests of sdpo-rs's trainer flow.

Run through tools/make_trl_flow_fixture.sh (it makes or reuses the pinned venv of
tools/trl-venv.sh). What runs is transformers' own `Trainer.train()` (DefaultFlowCallback,
`_maybe_log_save_evaluate`, `_determine_best_metric`, `_save_checkpoint`, `rotate_checkpoints`,
`_load_best_model`, `_finalize_training`) on a one-parameter model on the CPU. Two things are
scripted:

* the data: `steps_per_epoch` training items, batch size 1, no gradient accumulation, so an
  epoch is exactly `steps_per_epoch` optimizer steps;
* the evaluation metrics: `evaluation_loop` is overridden to return the case's i-th metrics
  dict (no forward pass); `Trainer.evaluate` itself still runs around it (adds its
  `eval_runtime` … speed metrics, `self.log`s the record and fires `on_evaluate`), and so does
  everything the loop does with the result.

A TrainerCallback records what happened; `_load_best_model` is wrapped (it still runs) to record
which checkpoint it loads. Cases whose TrainingArguments / Trainer refuse the combination are
written to `refused` with the exception text. NaN and ±inf are written as the JSON strings
"NaN", "Infinity", "-Infinity" (the fixture README says so).
"""

import json
import math
import os
import re
import sys
import tempfile
from pathlib import Path

import torch
import transformers
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from transformers.trainer_utils import EvalLoopOutput

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "fixtures" / "trl" / "flow.json"
VERSIONS = {"transformers": transformers.__version__, "torch": torch.__version__}
NAN = float("nan")

transformers.logging.set_verbosity_error()


class TinyModel(torch.nn.Module):
    """One nn.Linear; forward returns {"loss": ...} as transformers' models do."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(1, 1)

    def forward(self, x, labels=None):
        return {"loss": (self.linear(x.view(-1, 1)) ** 2).mean()}


class Items(torch.utils.data.Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"x": torch.tensor([float(i + 1)])}


class Recorder(TrainerCallback):
    def __init__(self):
        self.logged, self.evaluated, self.saved = [], [], []

    def on_log(self, args, state, control, logs=None, **kwargs):
        # training-loss records only: not eval records (eval_*) nor the end-of-run record (train_loss, train_runtime)
        if logs is not None and "loss" in logs and "train_runtime" not in logs:
            self.logged.append(state.global_step)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self.evaluated.append(state.global_step)

    def on_save(self, args, state, control, **kwargs):
        self.saved.append(state.global_step)


class ScriptedTrainer(Trainer):
    """transformers' Trainer whose evaluation returns scripted metrics."""

    def __init__(self, *a, scripted=None, **kw):
        super().__init__(*a, **kw)
        self.scripted = list(scripted or [])
        self.n_evals = 0
        self.loaded_best = None

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"):
        if self.n_evals >= len(self.scripted):
            raise RuntimeError(f"case scripts {len(self.scripted)} evaluations, the loop runs more")
        metrics = dict(self.scripted[self.n_evals])
        self.n_evals += 1
        return EvalLoopOutput(predictions=None, label_ids=None, metrics=metrics, num_samples=len(dataloader.dataset))

    def _load_best_model(self):
        self.loaded_best = os.path.basename(self.state.best_model_checkpoint)
        return super()._load_best_model()


def jsonable(v):
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "Infinity" if v > 0 else "-Infinity"
        return v
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    return v


def make_args(tmp, args):
    return TrainingArguments(
        output_dir=tmp, use_cpu=True, report_to="none", per_device_train_batch_size=1,
        per_device_eval_batch_size=1, learning_rate=1e-3, disable_tqdm=True, dataloader_num_workers=0,
        seed=0, **args,
    )


def make_trainer(tmp, case, scripted):
    targs = make_args(tmp, {"max_steps": case["max_steps"], **case["args"]})
    trainer = ScriptedTrainer(
        model=TinyModel(), args=targs, train_dataset=Items(case["steps_per_epoch"]), eval_dataset=Items(2),
        scripted=scripted,
    )
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer


def ckpt_step(name):
    m = re.fullmatch(r"checkpoint-(\d+)", name)
    return int(m.group(1)) if m else None


def run_case(case):
    scripted = case["eval_metrics"]
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        trainer = make_trainer(tmp, case, scripted)
        rec = Recorder()
        trainer.add_callback(rec)
        trainer.train()
        remaining = sorted(s for s in (ckpt_step(n) for n in os.listdir(tmp)) if s is not None and os.path.isdir(os.path.join(tmp, f"checkpoint-{s}")))
        state = trainer.state
        best_ckpt = os.path.basename(state.best_model_checkpoint) if state.best_model_checkpoint is not None else None
        return {
            "name": case["name"],
            "max_steps": case["max_steps"],
            "steps_per_epoch": case["steps_per_epoch"],
            "args": case["args"],
            "eval_metrics": scripted[: trainer.n_evals],
            "logged_steps": rec.logged,
            "eval_steps_run": rec.evaluated,
            "saved_steps": rec.saved,
            "remaining_checkpoints": remaining,
            "best_metric": None if state.best_metric is None else float(state.best_metric),
            "best_global_step": state.best_global_step,
            "best_model_checkpoint": best_ckpt,
            "loaded_best": trainer.loaded_best,
        }


def metrics(losses, accs=None):
    """The scripted evaluation results: eval_loss and (optionally) eval_rewards/accuracies."""
    out = []
    n = len(losses) if accs is None else min(len(losses), len(accs))
    for i, loss in enumerate(losses[:n]):
        m = {"eval_loss": loss}
        if accs is not None:
            m["eval_rewards/accuracies"] = accs[i]
        out.append(m)
    return out


DOWN = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.35, 0.3, 0.25, 0.2, 0.15, 0.1]  # improves at every evaluation
EARLY = [0.5, 0.3, 0.4, 0.45, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3]  # best at the 2nd evaluation
LATE = [0.9, 0.95, 1.0, 0.97, 0.99, 0.4, 0.98, 0.96, 0.93, 0.92, 0.91, 0.9]  # best at the 6th
TIES = [0.5, 0.5, 0.4, 0.4, 0.45, 0.4, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]  # equal values: strict comparison
ACC_TIES = [0.5, 0.75, 0.75, 0.5, 0.75, 0.6, 1.0, 0.25, 0.5, 0.5, 0.5, 0.5]
NAN_MID = [0.5, NAN, 0.4, 0.45, 0.3, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2]
NAN_FIRST = [NAN, 0.6, 0.7, 0.5, 0.55, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4]
ALL_NAN = [NAN] * 12
FLAT = [0.7] * 12


def case(name, max_steps, steps_per_epoch, args, eval_metrics=None):
    return {
        "name": name, "max_steps": max_steps, "steps_per_epoch": steps_per_epoch, "args": args,
        "eval_metrics": eval_metrics if eval_metrics is not None else metrics(DOWN),
    }


NO_SAVE = {"save_strategy": "no"}
CASES = [
    # ---- logging ----
    case("log_steps_last_not_multiple", 10, 4, {"logging_steps": 3, **NO_SAVE}),
    case("log_steps_last_multiple", 10, 4, {"logging_steps": 5, **NO_SAVE}),
    case("log_first_step", 10, 4, {"logging_steps": 3, "logging_first_step": True, **NO_SAVE}),
    case("log_every_step", 5, 2, {"logging_steps": 1, "logging_first_step": True, **NO_SAVE}),
    case("log_steps_ratio", 10, 4, {"logging_steps": 0.25, **NO_SAVE}),
    case("log_epoch_partial_last_epoch", 10, 4, {"logging_strategy": "epoch", **NO_SAVE}),
    case("log_epoch_first_step", 10, 4, {"logging_strategy": "epoch", "logging_first_step": True, **NO_SAVE}),
    case("log_epoch_first_step_epoch_of_1", 3, 1, {"logging_strategy": "epoch", "logging_first_step": True, **NO_SAVE}),
    case("log_no", 6, 3, {"logging_strategy": "no", **NO_SAVE}),
    case("log_no_first_step", 6, 3, {"logging_strategy": "no", "logging_first_step": True, **NO_SAVE}),
    # ---- evaluation ----
    case("eval_steps_final_forced", 10, 4, {"eval_strategy": "steps", "eval_steps": 3, "logging_steps": 5, **NO_SAVE}),
    case("eval_steps_unset_uses_logging_steps", 10, 4, {"eval_strategy": "steps", "logging_steps": 4, **NO_SAVE}),
    case("eval_steps_zero_uses_logging_steps", 10, 4, {"eval_strategy": "steps", "eval_steps": 0, "logging_steps": 3, **NO_SAVE}),
    case("eval_steps_ratio_float_ceil", 25, 10, {"eval_strategy": "steps", "eval_steps": 0.28, "logging_steps": 5, **NO_SAVE}),  # 25 * 0.28 = 7.000000000000001
    case("eval_epoch_partial_last_epoch", 10, 4, {"eval_strategy": "epoch", "logging_steps": 2, **NO_SAVE}),
    case("eval_epoch_stop_inside_first_epoch", 3, 5, {"eval_strategy": "epoch", "logging_strategy": "epoch", "save_strategy": "epoch"}),
    case("eval_on_start_steps", 10, 4, {"eval_strategy": "steps", "eval_steps": 5, "eval_on_start": True, "logging_steps": 5, **NO_SAVE}),
    case("eval_on_start_strategy_no", 6, 3, {"eval_strategy": "no", "eval_on_start": True, "logging_steps": 2, **NO_SAVE}),
    case("eval_delay_steps", 9, 4, {"eval_strategy": "steps", "eval_steps": 2, "eval_delay": 5, "logging_steps": 3, **NO_SAVE}),
    case("eval_delay_beyond_end", 9, 4, {"eval_strategy": "steps", "eval_steps": 2, "eval_delay": 20, "logging_steps": 3, **NO_SAVE}),
    case("eval_delay_epoch", 10, 4, {"eval_strategy": "epoch", "eval_delay": 2, "logging_steps": 3, **NO_SAVE}),
    # ---- saving and rotation ----
    case("save_steps_final_forced", 10, 4, {"save_steps": 4, "logging_steps": 5}),
    case("save_steps_last_multiple", 10, 4, {"save_steps": 5, "logging_steps": 5}),
    case("save_steps_ratio", 10, 4, {"save_steps": 0.25, "logging_steps": 5}),
    case("save_steps_zero_only_final", 10, 4, {"save_steps": 0, "logging_steps": 5}),
    case("save_epoch_partial_last_epoch", 10, 4, {"save_strategy": "epoch", "logging_steps": 5}),
    case("save_limit_2", 10, 4, {"save_steps": 2, "save_total_limit": 2, "logging_steps": 5}),
    case("save_limit_1", 10, 4, {"save_steps": 2, "save_total_limit": 1, "logging_steps": 5}),
    case("save_limit_3", 10, 4, {"save_steps": 2, "save_total_limit": 3, "logging_steps": 5}),
    case("save_limit_0_keeps_all", 6, 4, {"save_steps": 2, "save_total_limit": 0, "logging_steps": 5}),
    # ---- best metric / best checkpoint ----
    case("best_metric_unset", 10, 4, {"eval_strategy": "steps", "eval_steps": 2, "save_steps": 2, "logging_steps": 2}, metrics(EARLY)),
    case("best_loss_early_limit_2_load_best", 10, 4,
         {"eval_strategy": "steps", "eval_steps": 2, "save_steps": 2, "logging_steps": 2, "save_total_limit": 2, "load_best_model_at_end": True},
         metrics(EARLY)),
    case("best_loss_early_limit_1_load_best", 10, 4,
         {"eval_strategy": "steps", "eval_steps": 2, "save_steps": 2, "logging_steps": 2, "save_total_limit": 1, "load_best_model_at_end": True},
         metrics(EARLY)),
    case("best_loss_early_limit_1_no_load_best", 10, 4,
         {"eval_strategy": "steps", "eval_steps": 2, "save_steps": 2, "logging_steps": 2, "save_total_limit": 1, "metric_for_best_model": "loss"},
         metrics(EARLY)),
    case("best_loss_early_limit_3_load_best", 12, 4,
         {"eval_strategy": "steps", "eval_steps": 2, "save_steps": 2, "logging_steps": 2, "save_total_limit": 3, "load_best_model_at_end": True},
         metrics(EARLY)),
    case("best_loss_late_no_limit_load_best", 12, 4,
         {"eval_strategy": "steps", "eval_steps": 2, "save_steps": 2, "logging_steps": 2, "load_best_model_at_end": True},
         metrics(LATE)),
    case("best_last_step_limit_1_load_best", 10, 4,
         {"eval_strategy": "steps", "eval_steps": 3, "save_steps": 3, "logging_steps": 3, "save_total_limit": 1, "load_best_model_at_end": True},
         metrics(DOWN)),
    case("best_ties_strict", 12, 4,
         {"eval_strategy": "steps", "eval_steps": 2, "save_steps": 2, "logging_steps": 2, "metric_for_best_model": "eval_loss", "load_best_model_at_end": True},
         metrics(TIES)),
    case("best_accuracy_greater_default_ties", 12, 4,
         {"eval_strategy": "steps", "eval_steps": 2, "save_steps": 2, "logging_steps": 2, "metric_for_best_model": "rewards/accuracies",
          "load_best_model_at_end": True, "save_total_limit": 2},
         metrics(FLAT, ACC_TIES)),
    case("best_accuracy_greater_false", 12, 4,
         {"eval_strategy": "steps", "eval_steps": 2, "save_steps": 2, "logging_steps": 2, "metric_for_best_model": "eval_rewards/accuracies",
          "greater_is_better": False, "load_best_model_at_end": True},
         metrics(FLAT, ACC_TIES)),
    case("best_loss_greater_true", 10, 4,
         {"eval_strategy": "steps", "eval_steps": 2, "save_steps": 2, "logging_steps": 2, "metric_for_best_model": "loss",
          "greater_is_better": True, "load_best_model_at_end": True},
         metrics(EARLY)),
    case("best_nan_in_middle", 10, 4,
         {"eval_strategy": "steps", "eval_steps": 2, "save_steps": 2, "logging_steps": 2, "load_best_model_at_end": True, "save_total_limit": 2},
         metrics(NAN_MID)),
    case("best_nan_first", 10, 4,
         {"eval_strategy": "steps", "eval_steps": 2, "save_steps": 2, "logging_steps": 2, "load_best_model_at_end": True, "save_total_limit": 2},
         metrics(NAN_FIRST)),
    case("best_all_nan", 6, 4,
         {"eval_strategy": "steps", "eval_steps": 2, "save_steps": 2, "logging_steps": 2, "load_best_model_at_end": True, "save_total_limit": 1},
         metrics(ALL_NAN)),
    case("best_all_nan_greater", 6, 4,
         {"eval_strategy": "steps", "eval_steps": 2, "save_steps": 2, "logging_steps": 2, "metric_for_best_model": "rewards/accuracies", "load_best_model_at_end": True},
         metrics(FLAT, ALL_NAN)),
    case("best_eval_on_start_ignored", 6, 3,
         {"eval_strategy": "steps", "eval_steps": 2, "save_steps": 2, "logging_steps": 2, "eval_on_start": True, "load_best_model_at_end": True},
         metrics([0.0, 0.5, 0.6, 0.4])),
    case("best_epoch_epoch_partial_limit_2_load_best", 10, 4,
         {"eval_strategy": "epoch", "save_strategy": "epoch", "logging_strategy": "epoch", "save_total_limit": 2, "load_best_model_at_end": True},
         metrics([0.5, 0.7, 0.6])),
    case("best_save_no_metric_set", 10, 4,
         {"eval_strategy": "steps", "eval_steps": 2, "logging_steps": 2, "save_strategy": "no", "metric_for_best_model": "loss"},
         metrics(EARLY)),
    case("best_save_steps_twice_eval_steps_best_unsaved", 10, 4,
         {"eval_strategy": "steps", "eval_steps": 2, "save_steps": 4, "logging_steps": 2, "load_best_model_at_end": True},
         metrics([0.5, 0.4, 0.3, 0.45, 0.6])),
    case("best_save_steps_3_eval_steps_2_no_load_best", 12, 4,
         {"eval_strategy": "steps", "eval_steps": 2, "save_steps": 3, "logging_steps": 2, "metric_for_best_model": "loss"},
         metrics([0.9, 0.5, 0.6, 0.4, 0.7, 0.8])),
    case("best_ratio_steps_misaligned_load_best", 7, 4,
         {"eval_strategy": "steps", "eval_steps": 0.2, "save_steps": 0.4, "logging_steps": 1, "load_best_model_at_end": True},
         metrics([0.9, 0.5, 0.6, 0.7])),
    case("best_eval_epoch_save_steps_stale_checkpoint", 6, 3,
         {"eval_strategy": "epoch", "save_steps": 3, "logging_steps": 3, "metric_for_best_model": "loss"},
         metrics([0.5, 0.4])),
    case("best_eval_delay_load_best", 10, 4,
         {"eval_strategy": "steps", "eval_steps": 2, "save_steps": 2, "eval_delay": 5, "logging_steps": 2, "load_best_model_at_end": True, "save_total_limit": 2},
         metrics([0.5, 0.6, 0.7])),
    # ---- save_strategy="best" ----
    case("save_best_steps", 12, 4,
         {"eval_strategy": "steps", "eval_steps": 2, "save_strategy": "best", "metric_for_best_model": "loss", "logging_steps": 2},
         metrics(LATE)),
    case("save_best_steps_limit_1_load_best", 12, 4,
         {"eval_strategy": "steps", "eval_steps": 2, "save_strategy": "best", "logging_steps": 2, "save_total_limit": 1, "load_best_model_at_end": True},
         metrics(TIES)),
    case("save_best_epoch_partial_greater", 11, 3,
         {"eval_strategy": "epoch", "save_strategy": "best", "metric_for_best_model": "rewards/accuracies", "logging_strategy": "epoch",
          "save_total_limit": 2},
         metrics(FLAT, [0.5, 0.75, 0.75, 0.8])),
    case("save_best_eval_no_load_best", 6, 3,
         {"eval_strategy": "no", "save_strategy": "best", "logging_steps": 2, "load_best_model_at_end": True}),
    case("load_best_eval_no_save_no", 6, 3,
         {"eval_strategy": "no", "save_strategy": "no", "logging_steps": 2, "load_best_model_at_end": True}),
]

REFUSED = [
    {"eval_strategy": "steps", "save_strategy": "epoch", "load_best_model_at_end": True},
    {"eval_strategy": "epoch", "save_strategy": "steps", "load_best_model_at_end": True},
    {"eval_strategy": "no", "save_strategy": "steps", "load_best_model_at_end": True},
    {"eval_strategy": "steps", "eval_steps": 2, "save_steps": 3, "load_best_model_at_end": True},
    {"eval_strategy": "steps", "eval_steps": 0.1, "save_steps": 3, "load_best_model_at_end": True},
    {"eval_strategy": "steps", "eval_steps": 2, "save_steps": 0.5, "load_best_model_at_end": True},
    {"eval_strategy": "steps", "eval_steps": 0.2, "save_steps": 0.5, "load_best_model_at_end": True},
    {"save_strategy": "best", "eval_strategy": "steps", "eval_steps": 2},
    {"eval_strategy": "steps", "logging_steps": 3, "load_best_model_at_end": True},  # eval_steps <- logging_steps, save_steps 500
    {"logging_strategy": "steps", "logging_steps": 0},
    {"eval_strategy": "steps", "logging_steps": 0, "logging_strategy": "no"},
    {"logging_steps": 2.5},
    {"eval_strategy": "steps", "eval_steps": 2.5},
    {"save_steps": 2.5},
    {"eval_strategy": "step"},
    {"save_strategy": "always"},
    {"logging_strategy": "best"},
    {"lr_scheduler_type": "reduce_lr_on_plateau", "eval_strategy": "no"},
]


def refused():
    out = []
    for args in REFUSED:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                make_trainer(tmp, {"max_steps": 10, "steps_per_epoch": 4, "args": args}, [])
            except (ValueError, KeyError) as err:
                out.append({"args": args, "python_error": str(err)})
            else:
                raise SystemExit(f"transformers accepted {args}")
    return out


def main():
    cases = [jsonable(run_case(c)) for c in CASES]
    names = [c["name"] for c in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    doc = {
        "format": "trl_flow/v1",
        "set": "fixtures",
        "versions": VERSIONS,
        "generator": "tools/make_trl_flow_fixture.py",
        "cases": cases,
        "refused": refused(),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    print(f"wrote {OUT}: {len(cases)} cases, {len(doc['refused'])} refused, {OUT.stat().st_size} bytes")


if __name__ == "__main__":
    main()
