#!/usr/bin/env bash
# Opens HTML pages in headless Chromium (Debian's `chromium`), screenshots them and fails on a
# blank or broken page: too few distinct colours in the screenshot, or a DOM without the
# expected number of token elements / chart SVGs. Idempotent: installs Chromium only if absent.
#
# usage: ci/html-check.sh [--shots DIR] [--size WxH] [--min-colours N]
#                         [--tokens N] [--charts N] PAGE.html
#                         [[--tokens N] [--charts N] PAGE.html ...]
#   --tokens / --charts apply to the next page only (omitted: not checked).
#   --shots DIR: where the screenshots go (default: a temporary directory); one PNG per page,
#   named after it. --size: the window (default 1280x1600). --min-colours: default 12.
# example:
#   ci/html-check.sh --shots target/html-check --charts 9 runs/quickstart/report.html \
#                    --tokens 480 --charts 2 runs/quickstart/inspect.html
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
shots=""
size="1280,1600"
min_colours=12
tokens=""
charts=""
pages=()
checks=()

while [ $# -gt 0 ]; do
  case "$1" in
    --shots) shots="$2"; shift 2 ;;
    --size) size="${2/x/,}"; shift 2 ;;
    --min-colours) min_colours="$2"; shift 2 ;;
    --tokens) tokens="$2"; shift 2 ;;
    --charts) charts="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    -*) echo "html-check: unknown option $1" >&2; exit 2 ;;
    *)
      pages+=("$1")
      checks+=("${tokens:+tokens=$tokens} ${charts:+charts=$charts}")
      tokens=""; charts=""; shift ;;
  esac
done
if [ ${#pages[@]} -eq 0 ]; then
  echo "html-check: no page given (see --help)" >&2
  exit 2
fi

find_chromium() {
  command -v chromium || command -v chromium-browser || true
}

chromium_bin="$(find_chromium)"
if [ -z "$chromium_bin" ]; then
  echo "html-check: installing chromium (Debian package)" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    chromium fonts-dejavu-core >/dev/null
  chromium_bin="$(find_chromium)"
  if [ -z "$chromium_bin" ]; then
    echo "html-check: chromium is still not on PATH after installing it" >&2
    exit 1
  fi
fi
echo "html-check: $("$chromium_bin" --version 2>/dev/null || echo "$chromium_bin")" >&2

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if [ -z "$shots" ]; then shots="$work/shots"; fi
mkdir -p "$shots"

run_chromium() {
  # A fresh profile per call, nothing that reaches the network.
  local profile
  profile="$(mktemp -d "$work/profile.XXXXXX")"
  timeout 120 "$chromium_bin" --headless --no-sandbox --disable-gpu --disable-quic \
    --no-first-run --disable-background-networking --disable-component-update --disable-sync \
    --disable-dev-shm-usage --hide-scrollbars --user-data-dir="$profile" "$@"
}

status=0
for i in "${!pages[@]}"; do
  page="${pages[$i]}"
  if [ ! -f "$page" ]; then
    echo "html-check: FAIL: $page does not exist" >&2
    status=1
    continue
  fi
  url="file://$(cd "$(dirname "$page")" && pwd)/$(basename "$page")"
  name="$(basename "$page" .html)"
  png="$shots/$name.png"
  dom="$work/$name.dom.html"
  rm -f "$png"
  run_chromium --window-size="$size" --screenshot="$png" "$url" >/dev/null 2>"$work/$name.log" || true
  if [ ! -s "$png" ]; then
    echo "html-check: FAIL: no screenshot of $page" >&2
    tail -n 20 "$work/$name.log" >&2 || true
    status=1
    continue
  fi
  if ! run_chromium --dump-dom "$url" >"$dom" 2>>"$work/$name.log"; then
    echo "html-check: FAIL: chromium could not dump the DOM of $page" >&2
    tail -n 20 "$work/$name.log" >&2 || true
    status=1
    continue
  fi
  # shellcheck disable=SC2086 # the expectations are separate words on purpose
  if ! python3 "$here/html_check.py" png "$png" "$min_colours" \
     || ! python3 "$here/html_check.py" dom "$dom" ${checks[$i]}; then
    echo "html-check: FAIL: $page (screenshot $png)" >&2
    status=1
    continue
  fi
  echo "html-check: ok: $page (screenshot $png)" >&2
done
exit $status
