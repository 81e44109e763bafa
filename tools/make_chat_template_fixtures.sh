#!/usr/bin/env bash
# Regenerates fixtures/chat_templates.json (every chat template TRL 1.16 ships, rendered by
# transformers 5.24) with the pinned venv of tools/trl-venv.sh. About 10 s warm.
#   tools/make_chat_template_fixtures.sh [OUT.json]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="$("$ROOT/tools/trl-venv.sh")"
HF_HUB_OFFLINE=1 "$PY" "$ROOT/tools/make_chat_template_fixtures.py" "$@"
