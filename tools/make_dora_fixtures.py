"""DoRA goldens (fixtures/README.md section 4d): PEFT 0.21's weight-decomposed LoRA.

Writes, under the fixtures directory given as argv[1] (default `fixtures`):

  dora/llama_r4/    models/llama + a DoRA adapter (r 4, alpha 8, the 7 linear kinds)
  dora/gpt2_r4/     models/gpt2 + a DoRA adapter on GPT-2's Conv1D layers (fan_in_fan_out)
  dora/llama_nf4_dq/  the dora/llama_r4 adapter over the 4-bit base (nf4, double quantization,
                      float32 compute): QDoRA

Each adapter directory holds PEFT's own `save_pretrained` output with every `lora_A` and
`lora_B` overwritten by seeded N(0, 0.2^2) values and every `lora_magnitude_vector` by PEFT's
initial value (the row norms of W) times (1 + 0.1 N(0, 1)): PEFT starts B at zero and the
magnitude at ||W||, which would hide both loading and magnitude bugs. Goldens: logits with the
adapter on, disabled and merged, the magnitude PEFT initialises on the plain base, and a DPO
(sigmoid) loss with its gradient w.r.t. every lora_A, lora_B and lora_magnitude_vector.

Run with the pinned stack of tools/make_qlora_fixtures.sh (its venv): the helpers for the DPO
loss and the 4-bit loading are imported from tools/make_qlora_fixtures.py.
"""

import hashlib
import json
import pathlib
import shutil
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import make_qlora_fixtures as Q  # noqa: E402  (the same pinned stack, DPO helpers)
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import AutoModelForCausalLM, BitsAndBytesConfig  # noqa: E402

OUT = Q.OUT
DDIR = OUT / "dora"


def peft_params(model):
    """Every adapter tensor under the key PEFT saves it with."""
    out = {}
    for name, p in model.named_parameters():
        if "lora_A" in name or "lora_B" in name:
            out[name.replace(".default.", ".")] = p
        elif "lora_magnitude_vector" in name:
            out[name.replace(".default.weight", "")] = p
    return out


def load_base(base_dir, quant=None):
    if quant is None:
        return AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32, attn_implementation="eager")
    base = AutoModelForCausalLM.from_pretrained(
        base_dir, quantization_config=quant, device_map="cpu", dtype=torch.float32, attn_implementation="eager"
    )
    for m in base.modules():
        if isinstance(m, Q.bnb.nn.Linear4bit):
            m.support_avx512bf16_for_cpu = False  # the portable float32 path (make_qlora_fixtures.py)
    return base


def make_adapter(name, base_rel, targets, seed):
    """A DoRA adapter directory written by PEFT with seeded values; returns (dir, config, init)."""
    base = load_base(OUT / base_rel)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=targets, use_dora=True, lora_dropout=0.0, bias="none")
    model = get_peft_model(base, cfg)
    init = {k: p.detach().clone() for k, p in peft_params(model).items() if k.endswith("lora_magnitude_vector")}
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, p in sorted(peft_params(model).items()):
            if k.endswith("lora_magnitude_vector"):
                p.mul_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    d = DDIR / name
    if d.exists():
        shutil.rmtree(d)
    model.save_pretrained(str(d))
    conf = json.loads((d / "adapter_config.json").read_text())
    conf["base_model_name_or_path"] = base_rel
    conf["target_modules"] = sorted(conf["target_modules"])  # PEFT writes a set: fix the order
    (d / "adapter_config.json").write_text(json.dumps(conf, indent=2, sort_keys=True) + "\n")
    readme = d / "README.md"
    if readme.exists():
        readme.unlink()
    return d, conf, init


def dpo_batch(vocab):
    lj = json.loads((OUT / "lora/llama_r4/golden.json").read_text())
    batch = {}
    for side in ("chosen", "rejected"):
        s = dict(lj["sdpo"][side])
        s["input_ids"] = [[t % vocab for t in row] for row in s["input_ids"]]
        batch[side] = s
    return batch


def golden_case(name, base_rel, adapter_rel, conf, init, inputs_from, quant=None, quant_desc=None):
    base_dir = OUT / base_rel
    src = load_file(str(OUT / inputs_from))
    ids, am = src["input_ids"], src["attention_mask"]
    model = PeftModel.from_pretrained(load_base(base_dir, quant), str(OUT / adapter_rel), is_trainable=True)
    model.eval()
    vocab = model.config.vocab_size
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=am).logits
        with model.disable_adapter():
            logits_off = model(input_ids=ids, attention_mask=am).logits
    tensors = {"input_ids": ids, "attention_mask": am, "logits": logits, "logits_adapter_disabled": logits_off}
    valid = am.bool()
    report = {"adapter_vs_base_max_abs_diff": float((logits - logits_off)[valid].abs().max())}
    if quant is None:
        for k, v in init.items():
            tensors[f"init_magnitude/{k}"] = v

    batch = dpo_batch(vocab)
    loss, losses, pc, pr, rc, rr = Q.dpo(model, batch)
    loss.backward()
    grads = {k: p.grad.detach().contiguous().clone() for k, p in peft_params(model).items()}
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert any(k.endswith("lora_magnitude_vector") for k in grads)

    if quant is None:
        merged = PeftModel.from_pretrained(load_base(base_dir), str(OUT / adapter_rel)).merge_and_unload()
        merged.eval()
        with torch.no_grad():
            tensors["logits_merged"] = merged(input_ids=ids, attention_mask=am).logits
        report["merged_vs_adapter_max_abs_diff"] = float((tensors["logits_merged"] - logits)[valid].abs().max())
    print(f"[{name}] {report}; DPO loss_mean {loss.item():.9g}")

    d = DDIR / name
    d.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(d / "golden.safetensors"))
    save_file(grads, str(d / "dpo_grads.safetensors"))
    golden = {
        "format": "dora_golden/v1",
        "set": "fixtures",
        "generator": "tools/make_dora_fixtures.py",
        "versions": Q.versions(),
        "base_model_dir": base_rel,
        "adapter_dir": adapter_rel,
        "peft_config": {k: conf[k] for k in ("r", "lora_alpha", "use_dora", "use_rslora", "target_modules",
                                             "fan_in_fan_out", "lora_dropout")},
        "bnb_config": quant_desc,
        "attn_implementation": "eager",
        "input_ids": ids.tolist(),
        "attention_mask": am.tolist(),
        **report,
        "dpo": {
            "loss_type": "sigmoid",
            "beta": 0.1,
            "label_smoothing": 0.0,
            "reference": "the same model with the adapter disabled (model.disable_adapter())",
            "batch_from": "lora/llama_r4/golden.json sdpo.chosen / sdpo.rejected, input_ids modulo "
            "the vocabulary size",
            "logps": "per sequence: sum over t >= 1 with completion_mask[t] == 1 of "
            "log_softmax(logits[t-1])[input_ids[t]] (README section 4)",
            "chosen": batch["chosen"],
            "rejected": batch["rejected"],
            "loss_mean": Q.f32(loss.item()),
            "losses": Q.f32list(losses),
            "chosen_logps": Q.f32list(pc),
            "rejected_logps": Q.f32list(pr),
            "ref_chosen_logps": Q.f32list(rc),
            "ref_rejected_logps": Q.f32list(rr),
            "grads_file": "dpo_grads.safetensors",
        },
    }
    (d / "golden.json").write_text(json.dumps(golden, indent=1) + "\n")


def main():
    Q.check_versions()
    DDIR.mkdir(parents=True, exist_ok=True)
    kinds = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    _, conf, init = make_adapter("llama_r4", "models/llama", kinds, seed=11)
    golden_case("llama_r4", "models/llama", "dora/llama_r4", conf, init, "models/llama/golden.safetensors")
    _, conf_g, init_g = make_adapter("gpt2_r4", "models/gpt2", ["c_attn", "c_proj", "c_fc"], seed=12)
    golden_case("gpt2_r4", "models/gpt2", "dora/gpt2_r4", conf_g, init_g, "models/gpt2/golden.safetensors")
    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
    )
    desc = {
        "load_in_4bit": True,
        "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_use_double_quant": True,
        "bnb_4bit_compute_dtype": "float32",
        "bnb_4bit_quant_storage": "uint8",
    }
    golden_case("llama_nf4_dq", "models/llama", "dora/llama_r4", conf, init, "models/llama/golden.safetensors",
                quant=quant, quant_desc=desc)
    for p in sorted(DDIR.rglob("*")):
        if p.is_file():
            print(f"{hashlib.sha256(p.read_bytes()).hexdigest()[:16]}  {p.stat().st_size:8d}  {p.relative_to(OUT)}")


if __name__ == "__main__":
    main()
