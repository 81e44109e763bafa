#!/usr/bin/env bash
# Checks that two builds of `sdpo` train bit for bit alike: the same short quickstart runs
# (whole graph, memory-bounded engine, LoRA, precomputed reference) with each binary, then every
# file of every checkpoint and of the final model compared byte for byte, except what differs
# from run to run of the same binary: burn draws each parameter's id at random per process, so
# `optimizer.bpk` is compared tensor by tensor keyed by parameter name, `trainer_state.json`
# without its `param_ids`, `manifest.json` without those two files' digests, and
# `metrics.jsonl` without its timing fields. Used for refactors that must not change a bit.
#
#   tools/checkpoint_identity.sh OLD_SDPO NEW_SDPO [WORK_DIR]
#
# Run from the repository root. Exits non-zero on the first difference, naming the file.
set -euo pipefail
old=$1
new=$2
work=${3:-$(mktemp -d)}
mkdir -p "$work"
variants=(
  "whole:"
  "bounded:--set gradient_checkpointing=true"
  "lora:--set use_peft=true --set lora_dropout=0.1"
  "precomputed:--set precompute_ref_log_probs=true --set gradient_checkpointing=true --set shared_prompt_forward=true"
)
common=(--config examples/quickstart/sdpo.toml --set max_steps=3 --set save_strategy=steps
  --set save_steps=1 --set eval_strategy=steps --set eval_steps=2 --set logging_steps=1)
status=0
for variant in "${variants[@]}"; do
  name=${variant%%:*}
  # shellcheck disable=SC2206
  extra=(${variant#*:})
  for side in old new; do
    bin=$old
    [ "$side" = new ] && bin=$new
    out="$work/run"
    rm -rf "$out"
    "$bin" train "${common[@]}" "${extra[@]}" --set output_dir="$out" >"$work/$name-$side.log" 2>&1 \
      || { echo "$name ($side): training failed, see $work/$name-$side.log"; exit 1; }
    rm -rf "${work:?}/$name-$side"
    mv "$out" "$work/$name-$side"
  done
  python3 - "$work/$name-old" "$work/$name-new" "$name" <<'PY' || status=1
import json, os, sys
old, new, name = sys.argv[1:]
timing = ("runtime", "per_second")

def cbor(b, i=0):
    """The subset of CBOR burnpack's header uses."""
    ib = b[i]; major, info = ib >> 5, ib & 31; i += 1
    if info < 24: val = info
    else:
        n = {24: 1, 25: 2, 26: 4, 27: 8}[info]
        val = int.from_bytes(b[i:i + n], "big"); i += n
    if major == 0: return val, i
    if major == 1: return -1 - val, i
    if major == 2: return b[i:i + val], i + val
    if major == 3: return b[i:i + val].decode(), i + val
    if major == 4:
        out = []
        for _ in range(val):
            x, i = cbor(b, i); out.append(x)
        return out, i
    if major == 5:
        out = {}
        for _ in range(val):
            k, i = cbor(b, i); v, i = cbor(b, i); out[k] = v
        return out, i
    if major == 7 and info in (20, 21, 22): return {20: False, 21: True, 22: None}[info], i
    raise ValueError(f"CBOR major {major} info {info}")

def optimizer_state(path):
    """burnpack's tensors and scalars keyed by parameter name instead of the random ParamId
    burn draws in each process (the bytes of a file differ from run to run for that alone)."""
    d = open(path, "rb").read()
    assert d[:4] == b"NRUB", path
    n = int.from_bytes(d[6:10], "little")
    meta, _ = cbor(d[10:10 + n])
    names = meta["metadata"]
    data_end = max(t["data_offsets"][1] for t in meta["tensors"].values())
    start = len(d) - data_end
    def rename(key):
        pid, _, rest = key.partition(".")
        return names.get(pid, pid) + "." + rest
    tensors = {rename(k): (t["dtype"], t["shape"], d[start + t["data_offsets"][0]:start + t["data_offsets"][1]])
               for k, t in meta["tensors"].items()}
    scalars = {rename(k): v for k, v in meta["scalars"].items()}
    return tensors, scalars

def files(root):
    out = set()
    for d, _, fs in os.walk(root):
        for f in fs:
            out.add(os.path.relpath(os.path.join(d, f), root))
    return out

a, b = files(old), files(new)
skip = {"report.html", "README.md"}
bad = []
for f in sorted((a | b) - skip):
    if f not in a or f not in b:
        bad.append(f"{f}: only in {'new' if f in b else 'old'}")
        continue
    pa, pb = os.path.join(old, f), os.path.join(new, f)
    base = os.path.basename(f)
    if base == "metrics.jsonl":
        la = [json.loads(l) for l in open(pa)]
        lb = [json.loads(l) for l in open(pb)]
        strip = lambda r: {k: v for k, v in r.items() if not any(t in k for t in timing)}
        same = [strip(r) for r in la] == [strip(r) for r in lb]
    elif base == "optimizer.bpk":
        same = optimizer_state(pa) == optimizer_state(pb)
    elif base == "trainer_state.json":
        sa, sb = json.load(open(pa)), json.load(open(pb))
        same = len(sa.pop("param_ids")) == len(sb.pop("param_ids")) and sa == sb
    elif base == "manifest.json":
        # Its digests of the two files above change with the ParamIds; the rest must agree.
        ma, mb = json.load(open(pa)), json.load(open(pb))
        for m in (ma, mb):
            for k in ("optimizer.bpk", "trainer_state.json"):
                m.get("files", {}).pop(k, None)
        same = ma == mb
    else:
        same = open(pa, "rb").read() == open(pb, "rb").read()
    if not same:
        bad.append(f"{f}: differs")
checked = len((a & b) - skip)
if bad:
    print(f"{name}: {len(bad)} differences"); [print("  " + x) for x in bad]
    sys.exit(1)
print(f"{name}: {checked} files identical (optimizer state by parameter name)")
PY
done
exit $status
