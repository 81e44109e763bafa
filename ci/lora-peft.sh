#!/usr/bin/env bash
# Loads LoRA adapters trained and saved by sdpo-models in Python PEFT 0.21.2 (+ transformers
# 5.24.0, torch 2.9.0) and checks that PEFT's logits with the adapter on and disabled match ours
# within 1e-4, and that the merged model saved by save_pretrained loads in transformers with the
# adapter-on logits (a saved checkpoint of every family exported). Cases: Llama all-linear, Qwen2 rsLoRA with rank/alpha patterns and
# modules_to_save, Qwen3 with PEFT's default targets, Phi-3's fused qkv_proj/gate_up_proj with
# modules_to_save, Gemma 3 all-linear, OLMo 2 named targets, GPT-2 Conv1D (fan_in_fan_out) with
# modules_to_save; and QLoRA: adapters trained on our 4-bit bases (Llama NF4 with double
# quantization, Qwen2 FP4) loaded by PEFT over transformers' bitsandbytes 0.50.2 quantization of
# the same checkpoints (no merged checkpoint for those: a 4-bit merge is not a float model);
# and DoRA (use_dora): Qwen3 all-linear, GPT-2 Conv1D, and QDoRA on the Llama NF4 base.
#
# Idempotent. Python packages go into a venv under ${SDPO_CACHE:-$HOME/.cache/sdpo-rs}:
# torch is taken from $SDPO_CACHE/torch-venv when that venv already has torch 2.9.0 (the tch
# stage of CI makes it), else installed from PyPI into this script's venv.
#
# Usage: ci/lora-peft.sh [EXPORT_DIR]   (from anywhere; honours CARGO_TARGET_DIR and SDPO_CACHE;
# EXPORT_DIR: adapters already exported by the lora_peft_export test)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${SDPO_CACHE:-$HOME/.cache/sdpo-rs}"
VENV="$CACHE/lora-peft-venv"
PY="$VENV/bin/python"

has_packages() {
    "$PY" - <<'EOF' 2>/dev/null
import peft, transformers, torch, bitsandbytes
assert peft.__version__ == "0.21.2", peft.__version__
assert bitsandbytes.__version__ == "0.50.2", bitsandbytes.__version__
assert transformers.__version__ == "5.24.0", transformers.__version__
assert torch.__version__.split("+")[0] == "2.9.0", torch.__version__
EOF
}

if ! has_packages; then
    echo "lora-peft: preparing $VENV"
    mkdir -p "$CACHE"
    [ -x "$PY" ] || python3 -m venv "$VENV"
    # Reuse CI's torch instead of a second multi-GB install.
    SDPO_CACHE="$CACHE" "$ROOT/tools/venv-torch.sh" "$PY"
    "$PY" -m pip install --quiet transformers==5.24.0 peft==0.21.2 accelerate==1.15.0 \
        bitsandbytes==0.50.2
    has_packages || { echo "lora-peft: the venv lacks the pinned packages" >&2; exit 1; }
fi

# CI's `cargo test --workspace -- --include-ignored` already ran the export test with
# SDPO_LORA_EXPORT_DIR set and passes that directory here: a separate `cargo test -p` would
# build burn a second time with other features.
EXPORT="${1:-}"
if [ -z "$EXPORT" ]; then
    EXPORT="$(mktemp -d)"
    trap 'rm -rf "$EXPORT"' EXIT
    echo "lora-peft: exporting adapters trained by sdpo-models into $EXPORT"
    (cd "$ROOT" && SDPO_LORA_EXPORT_DIR="$EXPORT" cargo test --quiet -p sdpo-models \
        --test lora_peft_export -- --ignored --nocapture)
fi

"$PY" - "$EXPORT" <<'EOF'
import json, pathlib, sys

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, BitsAndBytesConfig
import bitsandbytes

TOL = 1e-4
root = pathlib.Path(sys.argv[1])
cases = sorted(p for p in root.iterdir() if (p / "adapter").is_dir())
if not cases:
    sys.exit("lora-peft: nothing was exported")
failed = []
for case in cases:
    ours = load_file(str(case / "ours.safetensors"))
    config = json.loads((case / "adapter" / "adapter_config.json").read_text())
    quant = case / "quantization.json"
    extra = {}
    if quant.is_file():
        settings = json.loads(quant.read_text())
        settings["bnb_4bit_compute_dtype"] = getattr(torch, settings["bnb_4bit_compute_dtype"])
        settings["bnb_4bit_quant_storage"] = getattr(torch, settings["bnb_4bit_quant_storage"])
        extra = dict(quantization_config=BitsAndBytesConfig(**settings), device_map="cpu")
    base = AutoModelForCausalLM.from_pretrained(
        config["base_model_name_or_path"], dtype=torch.float32, attn_implementation="eager",
        **extra,
    )
    model = PeftModel.from_pretrained(base, str(case / "adapter")).eval()
    # On CPUs with AVX512-BF16, bitsandbytes switches an eval-mode Linear4bit to a bfloat16
    # kernel (other numbers, logits off by ~0.07); the float32 path is the reference here.
    for module in model.modules():
        if isinstance(module, bitsandbytes.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
    with torch.no_grad():
        inputs = dict(input_ids=ours["input_ids"], attention_mask=ours["attention_mask"])
        on = model(**inputs).logits
        with model.disable_adapter():
            off = model(**inputs).logits
    for key, theirs in (("logits", on), ("logits_adapter_disabled", off)):
        diff = (theirs - ours[key]).abs().max().item()
        ok = diff <= TOL  # NaN fails
        print(f"{case.name}: {key} max |PEFT - ours| = {diff:.2e} {'ok' if ok else 'FAIL'}")
        if not ok:
            failed.append(f"{case.name}/{key}")
    matters = (on - off).abs().max().item()
    print(f"{case.name}: adapter on vs off differ by {matters:.3f} in PEFT")
    if not matters > 10 * TOL:
        failed.append(f"{case.name}: the trained adapter does not change the logits")
    # The merged model, saved by save_pretrained: a plain transformers checkpoint.
    if not (case / "merged").is_dir():
        continue
    merged = AutoModelForCausalLM.from_pretrained(
        str(case / "merged"), dtype=torch.float32, attn_implementation="eager"
    ).eval()
    with torch.no_grad():
        plain = merged(**inputs).logits
    diff = (plain - ours["logits"]).abs().max().item()
    ok = diff <= TOL  # NaN fails
    print(f"{case.name}: merged checkpoint max |transformers - ours| = {diff:.2e} {'ok' if ok else 'FAIL'}")
    if not ok:
        failed.append(f"{case.name}/merged")
if failed:
    sys.exit("lora-peft: FAILED: " + ", ".join(failed))
print(f"lora-peft: {len(cases)} adapters load in PEFT 0.21.2 and their merged checkpoints in "
      f"transformers 5.24 with our logits (tol {TOL})")
EOF
