#!/usr/bin/env python3
"""Checks of one rendered page for ci/html-check.sh (standard library only).

    html_check.py png FILE.png MIN_COLOURS
        Decodes the PNG (8-bit RGB/RGBA/grey, non-interlaced, as Chromium writes them) and fails
        when it has fewer than MIN_COLOURS distinct colours or is nearly all one colour: a blank
        or broken page.

    html_check.py dom FILE.html [tokens=N] [charts=N]
        Reads the DOM Chromium dumped (--dump-dom) and fails unless it has exactly N token
        elements (elements whose class list contains `tok`) and N chart SVGs (an <svg> inside a
        <figure class="chart">), and no Chromium error page.
"""

import struct
import sys
import zlib
from collections import Counter
from html.parser import HTMLParser


def fail(message):
    print(f"html-check: FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def read_png(path):
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        fail(f"{path}: not a PNG")
    pos, idat, header = 8, [], None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    if header is None:
        fail(f"{path}: no IHDR")
    width, height, depth, colour, _, _, interlace = header
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(colour)
    if depth != 8 or channels is None or interlace != 0:
        fail(f"{path}: unsupported PNG (depth {depth}, colour type {colour}, interlace {interlace})")
    raw = zlib.decompress(b"".join(idat))
    stride = width * channels
    rows, prev, pos = [], bytearray(stride), 0
    for _ in range(height):
        kind, line = raw[pos], bytearray(raw[pos + 1 : pos + 1 + stride])
        pos += 1 + stride
        if kind == 1:
            for i in range(channels, stride):
                line[i] = (line[i] + line[i - channels]) & 0xFF
        elif kind == 2:
            for i in range(stride):
                line[i] = (line[i] + prev[i]) & 0xFF
        elif kind == 3:
            for i in range(stride):
                left = line[i - channels] if i >= channels else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                a = line[i - channels] if i >= channels else 0
                b = prev[i]
                c = prev[i - channels] if i >= channels else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        elif kind != 0:
            fail(f"{path}: bad PNG filter {kind}")
        rows.append(bytes(line))
        prev = line
    return width, height, channels, rows


def check_png(path, min_colours):
    width, height, channels, rows = read_png(path)
    colours = Counter()
    for row in rows:
        for x in range(0, len(row), channels):
            colours[row[x : x + min(channels, 3)]] += 1
    total = width * height
    top = colours.most_common(1)[0][1]
    print(
        f"html-check: {path}: {width}x{height}, {len(colours)} distinct colours, "
        f"most common covers {100 * top / total:.1f}%"
    )
    if len(colours) < min_colours:
        fail(f"{path}: only {len(colours)} distinct colours (< {min_colours}): blank or broken page")
    if top > 0.995 * total:
        fail(f"{path}: one colour covers {100 * top / total:.1f}% of the page: blank page")


class DomCounter(HTMLParser):
    """Counts token elements and chart SVGs."""

    VOID = {"br", "img", "meta", "link", "input", "hr", "col", "area", "base", "wbr", "source"}

    def __init__(self):
        super().__init__()
        self.tokens = 0
        self.charts = 0
        self.stack = []  # (tag, is_chart_figure)
        self.text = []

    def handle_starttag(self, tag, attrs):
        classes = (dict(attrs).get("class") or "").split()
        if "tok" in classes:
            self.tokens += 1
        if tag == "svg" and any(chart for _, chart in self.stack):
            if not any(t == "svg" for t, _ in self.stack):
                self.charts += 1
        if tag not in self.VOID:
            self.stack.append((tag, tag == "figure" and "chart" in classes))

    def handle_startendtag(self, tag, attrs):
        classes = (dict(attrs).get("class") or "").split()
        if "tok" in classes:
            self.tokens += 1

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                del self.stack[i:]
                break

    def handle_data(self, data):
        self.text.append(data)


def check_dom(path, expectations):
    with open(path, encoding="utf-8", errors="replace") as f:
        dom = f.read()
    counter = DomCounter()
    counter.feed(dom)
    text = " ".join("".join(counter.text).split())
    if len(text) < 40:
        fail(f"{path}: the page has almost no text ({len(text)} characters)")
    for marker in ("ERR_FILE_NOT_FOUND", "ERR_ACCESS_DENIED", "This site can’t be reached"):
        if marker in dom:
            fail(f"{path}: Chromium error page ({marker})")
    found = {"tokens": counter.tokens, "charts": counter.charts}
    print(f"html-check: {path}: {found['tokens']} token elements, {found['charts']} chart SVGs")
    for key, expected in expectations.items():
        if found[key] != expected:
            fail(f"{path}: expected {expected} {key}, the DOM has {found[key]}")


def main(argv):
    if len(argv) >= 3 and argv[0] == "png":
        check_png(argv[1], int(argv[2]))
    elif len(argv) >= 2 and argv[0] == "dom":
        expectations = {}
        for item in argv[2:]:
            key, _, value = item.partition("=")
            if key not in ("tokens", "charts") or not value.isdigit():
                fail(f"bad expectation `{item}` (tokens=N or charts=N)")
            expectations[key] = int(value)
        check_dom(argv[1], expectations)
    else:
        fail(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
