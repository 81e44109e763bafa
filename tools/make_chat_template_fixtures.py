#!/usr/bin/env python3
"""Writes fixtures/chat_templates.json: every chat template TRL ships (trl/chat_templates/*.jinja)
rendered by transformers' own `apply_chat_template(..., tokenize=False)` over a set of
conversations (plain turns, system prompts, multi-turn, tools, tool calls, reasoning,
`enable_thinking`, `date_string`, `continue_final_message`, unicode and quotes).

The tokenizer is `fixtures/smollm2/` (its special tokens reach the template as `bos_token`,
`eos_token`, ...); its chat template is replaced by each shipped template in turn. transformers'
`strftime_now` is pinned to FIXED_NOW so the goldens do not depend on the day; the fixture
records that instant, and the Rust test renders with the same fixed clock.

A case that transformers refuses (the template raises, or `continue_final_message` cannot cut)
is recorded with `error` (the exception type and message) instead of `text`: sdpo-data must
fail on it too.

Run with tools/make_chat_template_fixtures.sh (it makes the pinned venv).
"""

import datetime as real_datetime
import json
import os
import platform
import sys
from pathlib import Path

import jinja2
import tokenizers
import transformers
import trl
from transformers import AutoTokenizer
from transformers.utils import chat_template_utils

ROOT = Path(__file__).resolve().parent.parent
FIXED_NOW = real_datetime.datetime(2024, 7, 26, 9, 30, 5)


class FixedDatetime(real_datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return FIXED_NOW


chat_template_utils.datetime = FixedDatetime

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city, in \"metric\" or imperial units.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "The city, e.g. Zürich"},
                "days": {"type": "integer", "description": "Days ahead", "enum": [1, 2, 3]},
                "metric": {"type": "boolean"},
            },
            "required": ["city"],
        },
    },
}
CLOCK_TOOL = {
    "type": "function",
    "function": {"name": "get_time", "description": "The current time.", "parameters": {"type": "object", "properties": {}}},
}


def msg(role, content, **extra):
    return {"role": role, "content": content, **extra}


CASES = [
    {"case": "user_generation_prompt", "messages": [msg("user", "What color is the sky?")], "add_generation_prompt": True},
    {
        "case": "system_user_assistant",
        "messages": [msg("system", "You are terse."), msg("user", "What color is the sky?"), msg("assistant", "Blue.")],
    },
    {
        "case": "multi_turn",
        "messages": [
            msg("user", "Hi."),
            msg("assistant", "Hello! How can I help?"),
            msg("user", "Name a prime."),
            msg("assistant", "Seven."),
        ],
    },
    {
        "case": "multi_turn_generation_prompt",
        "messages": [msg("user", "Hi."), msg("assistant", "Hello!"), msg("user", "Name a prime.")],
        "add_generation_prompt": True,
    },
    {
        "case": "tools",
        "messages": [msg("user", "Weather in Paris?"), msg("assistant", "Let me check the weather in Paris.")],
        "tools": [WEATHER_TOOL],
    },
    {
        "case": "tools_system_generation_prompt",
        "messages": [msg("system", "Use tools when useful."), msg("user", "What time is it?")],
        "tools": [WEATHER_TOOL, CLOCK_TOOL],
        "add_generation_prompt": True,
    },
    {
        "case": "tool_calls",
        "messages": [
            msg("user", "Weather in Paris for 2 days?"),
            msg(
                "assistant",
                "",
                tool_calls=[
                    {
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 2, "metric": True}},
                    }
                ],
            ),
            msg("tool", "{\"temperature\": 21.5, \"sky\": \"clear\"}", name="get_weather"),
            msg("assistant", "It will be clear and 21.5 °C."),
        ],
        "tools": [WEATHER_TOOL],
    },
    {
        "case": "enable_thinking_false_generation_prompt",
        "messages": [msg("user", "Think, then answer: 2 + 2?")],
        "add_generation_prompt": True,
        "kwargs": {"enable_thinking": False},
    },
    {
        "case": "enable_thinking_false_full",
        "messages": [msg("user", "Think, then answer: 2 + 2?"), msg("assistant", "4")],
        "kwargs": {"enable_thinking": False},
    },
    {
        "case": "reasoning_content",
        "messages": [
            msg("user", "2 + 3?"),
            msg("assistant", "5", reasoning_content="Two plus three is five."),
        ],
    },
    {
        "case": "think_in_content",
        "messages": [msg("user", "2 + 3?"), msg("assistant", "<think>\nAdd them.\n</think>\n\n5")],
    },
    {
        "case": "continue_final_message",
        "messages": [msg("user", "Count to five."), msg("assistant", "One, two, three")],
        "continue_final_message": True,
    },
    {
        "case": "date_string",
        "messages": [msg("user", "What day is it?")],
        "add_generation_prompt": True,
        "kwargs": {"date_string": "01 Jan 2025"},
    },
    {
        "case": "unicode_and_quotes",
        "messages": [
            msg("system", "  Answer in \"quotes\" when asked.  "),
            msg("user", "Say 'héllo' in 日本語.\nThen stop. "),
            msg("assistant", " «こんにちは» — it's \"hello\".\n"),
        ],
    },
]


def render(tokenizer, case):
    kwargs = dict(case.get("kwargs", {}))
    try:
        text = tokenizer.apply_chat_template(
            case["messages"],
            tools=case.get("tools"),
            add_generation_prompt=case.get("add_generation_prompt", False),
            continue_final_message=case.get("continue_final_message", False),
            tokenize=False,
            **kwargs,
        )
        return {"text": text}
    except Exception as err:  # noqa: BLE001 - the goldens record what transformers refuses
        return {"error": f"{type(err).__name__}: {err}"}


def main():
    fixtures = Path(os.environ.get("SDPO_FIXTURES") or ROOT / "fixtures")
    out_path = Path(sys.argv[1]) if len(sys.argv) > 1 else fixtures / "chat_templates.json"
    tokenizer = AutoTokenizer.from_pretrained(str(fixtures / "smollm2"))
    template_dir = Path(trl.__file__).parent / "chat_templates"
    templates = []
    cases = []
    for path in sorted(template_dir.glob("*.jinja")):
        source = path.read_text(encoding="utf-8")
        templates.append({"name": path.stem, "chat_template": source})
        tokenizer.chat_template = source
        for case in CASES:
            entry = {
                "template": path.stem,
                "case": case["case"],
                "messages": case["messages"],
                "tools": case.get("tools"),
                "chat_template_kwargs": case.get("kwargs", {}),
                "add_generation_prompt": case.get("add_generation_prompt", False),
                "continue_final_message": case.get("continue_final_message", False),
            }
            entry.update(render(tokenizer, case))
            cases.append(entry)
    doc = {
        "format": "chat_templates/v1",
        "set": "fixtures",
        "versions": {
            "python": platform.python_version(),
            "transformers": transformers.__version__,
            "trl": trl.__version__,
            "jinja2": jinja2.__version__,
            "tokenizers": tokenizers.__version__,
        },
        "tokenizer_dir": "smollm2",
        "strftime_now": FIXED_NOW.isoformat(),
        "templates": templates,
        "cases": cases,
    }
    out_path.write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    errors = sum(1 for c in cases if "error" in c)
    print(f"{out_path}: {len(templates)} templates, {len(cases)} cases ({errors} refused by transformers)")


if __name__ == "__main__":
    main()
