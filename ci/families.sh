#!/usr/bin/env bash
# Two SDPO steps of `sdpo train` on tiny Qwen3 and Gemma 3 models (random weights from
# examples/families/*/config.json, SmolLM2's tokenizer), with and without the memory-bounded
# engine (`gradient_checkpointing`). Uses the debug `sdpo` binary the test stage built.
set -euo pipefail
cd "$(dirname "$0")/.."
sdpo="$CARGO_TARGET_DIR/debug/sdpo"
for family in qwen3 gemma3; do
    for checkpointing in false true; do
        run="$(mktemp -d)"
        echo "== $family, gradient_checkpointing = $checkpointing"
        "$sdpo" train --config examples/quickstart/sdpo.toml \
            --set "model_name_or_path=\"examples/families/$family\"" \
            --set max_steps=2 --set logging_steps=1 --set eval_steps=2 \
            --set "gradient_checkpointing=$checkpointing" \
            --set "output_dir=\"$run\""
        test -f "$run/model.safetensors"
        grep -q '"model_type": "'"$(sed -n 's/.*"model_type": "\([^"]*\)".*/\1/p' \
            "examples/families/$family/config.json")"'"' "$run/config.json"
        test "$(grep -c '"loss"' "$run/metrics.jsonl")" -ge 2
        grep -q '"eval_loss"' "$run/metrics.jsonl"
        rm -rf "$run"
    done
done
