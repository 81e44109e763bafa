"""Peak memory of Hugging Face `tokenizers` encoding one long text: the figure behind the
default of `max_text_bytes` (docs/data-formats.md, docs/benchmarks.md).

    python3 -m venv /tmp/tokvenv && /tmp/tokvenv/bin/pip install tokenizers
    /tmp/tokvenv/bin/python bench/tokenizer_memory.py fixtures/smollm2/tokenizer.json

Each pattern runs in a process of its own (ru_maxrss only grows).
"""
import resource
import subprocess
import sys

PATTERNS = ["The quick brown fox jumps over the lazy dog. ", "a!", "a ", "abcdefghijklmnopq"]
BYTES = 2 << 20


def one(path, pattern, size):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(path)
    text = (pattern * (size // len(pattern) + 1))[:size]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    encoding = tokenizer.encode(text, add_special_tokens=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    grew = (peak - before) * 1024
    tokens = len(encoding.ids)
    print(f"{pattern!r:50} {size} bytes -> {tokens} tokens, +{grew / 2**20:.0f} MiB, "
          f"{grew / tokens:.0f} bytes per token")


if __name__ == "__main__":
    if len(sys.argv) == 4:
        one(sys.argv[1], sys.argv[2], int(sys.argv[3]))
    else:
        for pattern in PATTERNS:
            subprocess.run([sys.executable, __file__, sys.argv[1], pattern, str(BYTES)], check=True)
