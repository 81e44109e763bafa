"""Writes fixtures/trl/: what TRL 1.16 and transformers 5.24 do with their configuration.

* keys.json: every key `trl dpo` accepts (the fields of ScriptArguments, DPOConfig with the
  TrainingArguments it inherits, ModelConfig, DatasetMixtureConfig, as `trl/scripts/dpo.py`
  parses them), with its dataclass, type, default and how its command-line flag behaves.
* schedules.json: the learning rate of every optimizer step under transformers' get_scheduler
  for each schedule sdpo-rs offers (warm-up as steps and as a ratio, lr_scheduler_kwargs),
  the schedules and kwargs transformers refuses, and logging/eval/save steps given as ratios
  resolved by TrainerState.compute_steps.

Run through tools/make_trl_fixtures.sh (which makes the venv); the fixture README says what each
file holds.
"""

import dataclasses
import enum
import json
import math
import pathlib
import sys
import tempfile

import torch
import transformers
import trl
from transformers import TrainingArguments, get_scheduler
from transformers.trainer_callback import TrainerState
from trl import DatasetMixtureConfig, DPOConfig, ModelConfig, ScriptArguments, TrlParser

OUT = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "fixtures/trl")
VERSIONS = {"trl": trl.__version__, "transformers": transformers.__version__, "torch": torch.__version__}


def jsonable(value):
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return repr(value)


def default_of(field):
    if field.default is not dataclasses.MISSING:
        return jsonable(field.default)
    if field.default_factory is not dataclasses.MISSING:
        return jsonable(field.default_factory())
    return None


def keys():
    classes = (ScriptArguments, DPOConfig, ModelConfig, DatasetMixtureConfig)
    # HfArgumentParser rewrites field types in place (`str | None` becomes `str`): read them first.
    types = {(cls.__name__, f.name): str(f.type).replace("typing.", "") for cls in classes for f in dataclasses.fields(cls)}
    parser = TrlParser(classes)
    actions = {a.dest: a for a in parser._actions}
    no_flags = {a.dest for a in parser._actions if any(o.startswith("--no_") for o in a.option_strings)}
    out = []
    for cls in classes:
        for field in dataclasses.fields(cls):
            if not field.init:
                continue
            action = actions.get(field.name)
            nargs = action.nargs if action is not None else None
            out.append(
                {
                    "name": field.name,
                    "dataclass": cls.__name__,
                    "type": types[(cls.__name__, field.name)],
                    "default": default_of(field),
                    "list": nargs in ("+", "*"),
                    "no_flag": field.name in no_flags,
                    "help": (field.metadata or {}).get("help", ""),
                }
            )
    return out


class _Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))


def lrs(kind, lr, warmup, total, kwargs):
    opt = torch.optim.SGD(_Model().parameters(), lr=lr)
    sched = get_scheduler(kind, opt, num_warmup_steps=warmup, num_training_steps=total, scheduler_specific_kwargs=kwargs)
    out = []
    for step in range(total):
        out.append(opt.param_groups[0]["lr"])
        if step + 1 < total:  # the lambda after the last step is never used (and can divide by 0)
            opt.step()
            sched.step()
    return out


def warmup_steps(value, total):
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=tmp, warmup_steps=value, use_cpu=True, report_to="none")
        return args.get_warmup_steps(total)


SCHEDULE_CASES = [
    ("linear", {}), ("cosine", {}), ("cosine", {"num_cycles": 1.5}), ("constant", {}),
    ("constant_with_warmup", {}), ("cosine_with_restarts", {}), ("cosine_with_restarts", {"num_cycles": 3}),
    ("polynomial", {}), ("polynomial", {"lr_end": 1e-7, "power": 2.0}), ("polynomial", {"lr_end": 5e-7, "power": 0.5}),
    ("inverse_sqrt", {}), ("inverse_sqrt", {"timescale": 7}),
    ("cosine_with_min_lr", {"min_lr_rate": 0.1}), ("cosine_with_min_lr", {"min_lr": 2e-7, "num_cycles": 0.25}),
    ("cosine_warmup_with_min_lr", {"min_lr_rate": 0.05}),
    ("cosine_warmup_with_min_lr", {"min_lr": 1e-7, "warmup_lr_rate": 0.2}),
    ("warmup_stable_decay", {"num_decay_steps": 5}),
    ("warmup_stable_decay", {"num_decay_steps": 6, "decay_type": "linear", "min_lr_ratio": 0.1}),
    ("warmup_stable_decay", {"num_decay_steps": 4, "num_stable_steps": 9, "warmup_type": "cosine", "decay_type": "1-sqrt"}),
    ("warmup_stable_decay", {"num_decay_steps": 8, "warmup_type": "1-sqrt", "num_cycles": 0.75, "decay_type": "cosine"}),
]
WARMUPS = [0, 3, 0.25, 0.1]
TOTALS = [1, 20, 37]

REFUSED = [
    ("cosine_with_min_lr", {}),
    ("cosine_with_min_lr", {"min_lr": 1e-7, "min_lr_rate": 0.1}),
    ("cosine_warmup_with_min_lr", {}),
    ("polynomial", {"lr_end": 2e-6}),
    ("warmup_stable_decay", {}),
    ("warmup_stable_decay", {"num_decay_steps": 4, "warmup_type": "exp"}),
    ("warmup_stable_decay", {"num_decay_steps": 4, "decay_type": "step"}),
    ("cosine", {"min_lr_rate": 0.1}),
    ("linear", {"num_cycles": 2}),
]


def schedules():
    lr = 1e-6
    cases = []
    for kind, kwargs in SCHEDULE_CASES:
        for warm in WARMUPS:
            for total in TOTALS:
                resolved = warmup_steps(warm, total)
                cases.append(
                    {
                        "lr_scheduler_type": kind,
                        "lr_scheduler_kwargs": kwargs,
                        "learning_rate": lr,
                        "warmup_steps": warm,
                        "total_steps": total,
                        "resolved_warmup_steps": resolved,
                        "lrs": lrs(kind, lr, resolved, total, kwargs),
                    }
                )
    refused = []
    for kind, kwargs in REFUSED:
        try:
            lrs(kind, lr, 2, 10, kwargs)
        except (ValueError, TypeError) as err:
            refused.append({"lr_scheduler_type": kind, "lr_scheduler_kwargs": kwargs, "learning_rate": lr, "python_error": str(err)})
        else:
            raise SystemExit(f"transformers accepted {kind} {kwargs}")
    intervals = []
    for max_steps in (7, 40, 1000):
        for logging, eval_steps, save in ((10, None, 500), (0.1, 0.25, 0.5), (0.05, 3, 0.001), (1, 0.99, 2)):
            with tempfile.TemporaryDirectory() as tmp:
                args = TrainingArguments(
                    output_dir=tmp, use_cpu=True, report_to="none", logging_steps=logging,
                    eval_strategy="steps", eval_steps=eval_steps, save_steps=save,
                )
                state = TrainerState()
                state.compute_steps(args, max_steps)
                intervals.append(
                    {
                        "max_steps": max_steps,
                        "logging_steps": logging, "eval_steps": eval_steps, "save_steps": save,
                        "resolved": {"logging_steps": state.logging_steps, "eval_steps": state.eval_steps, "save_steps": state.save_steps},
                    }
                )
    return {"cases": cases, "refused": refused, "intervals": intervals}


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "keys.json").write_text(
        json.dumps({"format": "trl_keys/v1", "set": "fixtures", "versions": VERSIONS, "keys": keys()}, indent=1) + "\n"
    )
    (OUT / "schedules.json").write_text(
        json.dumps({"format": "trl_schedules/v1", "set": "fixtures", "versions": VERSIONS, **schedules()}, indent=1) + "\n"
    )
    print("wrote", OUT / "keys.json", OUT / "schedules.json")


if __name__ == "__main__":
    main()
