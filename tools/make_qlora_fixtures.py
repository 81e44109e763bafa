"""bitsandbytes 4-bit quantization goldens and QLoRA goldens (fixtures/README.md section 4c).

Writes, under the fixtures directory given as argv[1] (default `fixtures`):

  qlora/quantize.json + quantize.safetensors
      bitsandbytes.functional.quantize_4bit / dequantize_4bit on the CPU, blocksize 64, for seven
      seeded float32 inputs x {nf4, fp4} x {double quantization off, on}.
  qlora/llama_nf4_dq/{golden.json, golden.safetensors, dpo_grads.safetensors}
      models/llama loaded by transformers in 4 bits (nf4, double quantization, compute dtype
      float32) + the PEFT adapter lora/llama_r4: logits with the adapter on and disabled, the
      bitsandbytes state of every quantized linear layer as loaded, and a DPO (sigmoid) loss
      with its gradient w.r.t. every lora_A / lora_B.
  qlora/qwen2_fp4/...
      the same for models/qwen2 + lora/qwen2_r8_rslora with fp4, no double quantization.

Run with bitsandbytes 0.50.2, torch 2.9.0, transformers 5.24.0, peft 0.21.2, accelerate 1.15.0
on the CPU (tools/make_qlora_fixtures.sh makes the venv).

The file also holds an independent numpy re-implementation of bitsandbytes' CPU algorithms
(`ref_*`, the executable form of the algorithm notes in README section 4c): every
output written here is checked bit for bit against it before it is written, so a Rust port of
the `ref_*` functions reproduces the fixtures exactly.

Two bitsandbytes 0.50.2 CPU behaviours are avoided on purpose (see README section 4c):
  * `dequantize_4bit`'s C++ CPU kernel, on AVX-512 machines, indexes absmax per row
    (`row * (n_cols / blocksize) + col / blocksize`) when n_cols % 16 == 0, which is wrong when
    n_cols % blocksize != 0 (blocks then span rows; e.g. [32, 48]). `dequantized` is written
    from bitsandbytes' own portable implementation (the default backend, identical to the
    scalar C++ path of non-AVX-512 machines), and the script reports where the kernel differs.
  * `Linear4bit.forward` on a CPU with AVX512-BF16, in eval mode with an input that does not
    require grad, repacks the weight and runs a bf16 kernel. The goldens disable that
    (`support_avx512bf16_for_cpu = False`) so they hold the portable float32 path:
    dequantize, then `F.linear` in the compute dtype.
"""

import hashlib
import json
import math
import os
import pathlib
import platform
import sys

# bitsandbytes wraps its portable dequantize in torch.compile; eager is the same arithmetic
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

import accelerate  # noqa: E402
import bitsandbytes as bnb  # noqa: E402
import bitsandbytes.functional as BF  # noqa: E402
import peft  # noqa: E402
import safetensors  # noqa: E402
import transformers  # noqa: E402
from bitsandbytes.backends.default.ops import _dequantize_4bit_compute  # noqa: E402
from peft import PeftModel  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import AutoModelForCausalLM, BitsAndBytesConfig  # noqa: E402

OUT = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "fixtures")
QDIR = OUT / "qlora"
BLOCKSIZE = 64
NESTED_BLOCKSIZE = 256
F32 = np.float32

EXPECTED = {
    "bitsandbytes": "0.50.2",
    "torch": "2.9.0",
    "transformers": "5.24.0",
    "peft": "0.21.2",
    "accelerate": "1.15.0",
}


def check_versions():
    got = {
        "bitsandbytes": bnb.__version__,
        "torch": torch.__version__.split("+")[0],
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "accelerate": accelerate.__version__,
    }
    for k, v in EXPECTED.items():
        assert got[k] == v, f"{k} {got[k]} != {v}"


def versions():
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "bitsandbytes": bnb.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "accelerate": accelerate.__version__,
        "safetensors": safetensors.__version__,
    }


# --------------------------------------------------------------------------------------------
# Reference implementation of bitsandbytes 0.50.2's CPU algorithms (numpy, float32 exact).
# --------------------------------------------------------------------------------------------


def _f32_from_bits(bits):
    return np.array(bits, dtype=np.uint32).view(np.float32)


# The 16-entry code tables, as float32 bit patterns, in code (nibble) order.
# NF4: bitsandbytes.functional.get_4bit_type("nf4") (the literals divided by 1.0).
NF4_BITS = [
    0xBF800000, 0xBF3239B1, 0xBF066B30, 0xBECA32A0, 0xBE91A24D, 0xBE3D353F, 0xBDBA7871, 0x00000000,
    0x3DA2FAFF, 0x3E24CAE3, 0x3E7C04DD, 0x3EAD033A, 0x3EE1A4B8, 0x3F1007AB, 0x3F3913B3, 0x3F800000,
]
# FP4: get_4bit_type("fp4") = float32([0, .0625, 8, 12, 4, 6, 2, 3, -0, -.0625, -8, ...]) / 12.
# Entry 8 is +0.0 in this (quantization) table: Python's `-0` literal is the integer 0.
FP4_BITS = [
    0x00000000, 0x3BAAAAAB, 0x3F2AAAAB, 0x3F800000, 0x3EAAAAAB, 0x3F000000, 0x3E2AAAAB, 0x3E800000,
    0x00000000, 0xBBAAAAAB, 0xBF2AAAAB, 0xBF800000, 0xBEAAAAAB, 0xBF000000, 0xBE2AAAAB, 0xBE800000,
]
NF4 = _f32_from_bits(NF4_BITS)
FP4 = _f32_from_bits(FP4_BITS)
# The C++ dequantization LUT of fp4 has -0.0 at entry 8 (same value, other sign bit).
FP4_DEQ = FP4.copy()
FP4_DEQ[8] = F32(-0.0)


def ref_code(quant_type):
    return NF4 if quant_type == "nf4" else FP4


def ref_bounds(quant_type):
    """Sorted code, its midpoints (float32) and the sorted->code index map (backends/default)."""
    code = ref_code(quant_type)
    # argsort of the fp4 table puts entry 0 (+0) before entry 8 (also 0): checked against torch.
    order = np.argsort(code, kind="stable")
    s = code[order]
    mid = ((s[:-1] + s[1:]) / F32(2)).astype(F32)
    return mid, order


def ref_quantize_4bit(a, blocksize, quant_type):
    """bitsandbytes::quantize_4bit, default (pure torch) backend: the one the CPU runs."""
    x = np.ascontiguousarray(a, dtype=F32).reshape(-1)
    n = x.size
    rem = n % blocksize
    full = n - rem
    nb = full // blocksize
    absmax = []
    scaled = np.empty(n, dtype=F32)
    if nb:
        blk = x[:full].reshape(nb, blocksize)
        am = np.abs(blk).max(axis=1).astype(F32)  # stored unclamped (0 for an all-zero block)
        recip = (F32(1) / np.maximum(am, F32(1e-38))).astype(F32)  # reciprocal, then multiply
        scaled[:full] = np.clip((blk * recip[:, None]).astype(F32), F32(-1), F32(1)).reshape(-1)
        absmax.extend(am.tolist())
    if rem:
        am = np.maximum(np.abs(x[full:]).max(), F32(1e-38)).astype(F32)  # stored clamped
        scaled[full:] = np.clip((x[full:] / am).astype(F32), F32(-1), F32(1))  # true division
        absmax.append(float(am))
    if n % 2:
        scaled = np.concatenate([scaled, np.zeros(1, F32)])  # pad: a 0 that quantizes like 0.0
    mid, order = ref_bounds(quant_type)
    # torch.bucketize(right=False): index = number of midpoints strictly below the value, so a
    # value exactly on a midpoint goes to the lower code.
    q = np.searchsorted(mid, scaled, side="left")
    if quant_type != "nf4":
        q = order[q]
    q = q.astype(np.uint8)
    packed = ((q[0::2] << 4) | q[1::2]).astype(np.uint8)  # element 2i -> high nibble
    return packed, np.array(absmax, dtype=F32)


def ref_dequantize_4bit(packed, absmax, quant_type, n, blocksize, cpp_lut=True):
    """out[i] = lut[nibble i] * absmax[i // blocksize] (one float32 multiply)."""
    p = np.asarray(packed, dtype=np.uint8).reshape(-1)
    idx = np.empty(p.size * 2, dtype=np.int64)
    idx[0::2] = p >> 4
    idx[1::2] = p & 0xF
    idx = idx[:n]
    lut = (FP4_DEQ if cpp_lut else FP4) if quant_type == "fp4" else NF4
    scale = np.repeat(np.asarray(absmax, dtype=F32), blocksize)[:n]
    return (lut[idx] * scale).astype(F32)


def ref_dynamic_map_check(code):
    """The nested (8-bit) code: create_dynamic_map(signed=True, max_exponent_bits=7,
    total_bits=8): 256 sorted float32 values, one 0, max 1.0, min -0.99296875."""
    assert code.shape == (256,) and np.all(np.diff(code) >= 0)
    assert code[255] == F32(1.0) and (code == 0).sum() == 1


_LUT_CACHE = {}


def ref_blockwise_lut(code):
    """The 65536-entry table of the C++ CPU quantize_blockwise (csrc/cpu_ops.cpp)."""
    key = code.tobytes()
    if key not in _LUT_CACHE:
        mid = ((code[:-1] + code[1:]) * F32(0.5)).astype(F32)  # 255 float32 midpoints
        i = np.arange(65536)
        val = ((F32(2) * i.astype(F32)) / F32(65535)).astype(F32) - F32(1)
        val = val.astype(F32)
        # lut[i] = number of midpoints strictly below val_i (midpoints are sorted)
        _LUT_CACHE[key] = np.searchsorted(mid, val, side="left").astype(np.uint8)
    return _LUT_CACHE[key]


def ref_quantize_blockwise_cpu(a, code, blocksize):
    """bitsandbytes::quantize_blockwise, C++ CPU kernel (float32 input)."""
    x = np.ascontiguousarray(a, dtype=F32).reshape(-1)
    n = x.size
    nb = -(-n // blocksize)
    lut = ref_blockwise_lut(code)
    out = np.zeros(n, dtype=np.uint8)
    absmax = np.zeros(nb, dtype=F32)
    for b in range(nb):
        blk = x[b * blocksize : (b + 1) * blocksize]
        am = F32(max(F32(0), np.abs(blk).max()))
        absmax[b] = am
        if am == 0:
            continue  # all codes 0
        inv = F32(F32(1) / am)
        v = np.clip((blk * inv).astype(F32), F32(-1), F32(1))
        t = ((v + F32(1)).astype(F32) * F32(0.5)).astype(F32)
        # fused multiply-add (the compiled kernel uses vfmadd): exact in float64 here because t
        # is a multiple of 2**-25 in [0, 1], then one rounding to float32, then truncation
        y = (t.astype(np.float64) * 65535.0 + 0.5).astype(F32)
        out[b * blocksize : (b + 1) * blocksize] = lut[y.astype(np.int64) & 0xFFFF]
    return out, absmax


def ref_dequantize_blockwise(q, absmax, code, blocksize):
    q = np.asarray(q, dtype=np.int64).reshape(-1)
    scale = np.repeat(np.asarray(absmax, dtype=F32), blocksize)[: q.size]
    return (code[q] * scale).astype(F32)


def _ceil_log2(x):
    return 0 if x <= 1 else int(x - 1).bit_length()


def _multi_row_sum(load, size, nrows, zero):
    num_levels = 4
    level_power = max(4, _ceil_log2(size) // num_levels)
    level_step = 1 << level_power
    level_mask = level_step - 1
    acc = [[zero() for _ in range(nrows)] for _ in range(num_levels)]
    i = 0
    while i + level_step <= size:
        for _ in range(level_step):
            for k in range(nrows):
                acc[0][k] = acc[0][k] + load(i, k)
            i += 1
        for j in range(1, num_levels):
            for k in range(nrows):
                acc[j][k] = acc[j][k] + acc[j - 1][k]
                acc[j - 1][k] = zero()
            if (i & (level_mask << (j * level_power))) != 0:
                break
    while i < size:
        for k in range(nrows):
            acc[0][k] = acc[0][k] + load(i, k)
        i += 1
    for j in range(1, num_levels):
        for k in range(nrows):
            acc[0][k] = acc[0][k] + acc[j][k]
    return acc[0]


def _row_sum(load, size, zero):
    ilp = 4
    size_ilp = size // ilp
    ps = _multi_row_sum(lambda i, k: load(i * ilp + k), size_ilp, ilp, zero)
    for i in range(size_ilp * ilp, size):
        ps[0] = ps[0] + load(i)
    for k in range(1, ilp):
        ps[0] = ps[0] + ps[k]
    return ps[0]


def ref_torch_sum_f32(x, lanes=8):
    """torch.sum of a contiguous 1-D float32 tensor on x86 (ATen cascade_sum, 8-lane vectors on
    AVX2 and on AVX-512 machines alike, single thread: below 32768 elements it never splits)."""
    x = np.ascontiguousarray(x, dtype=F32).reshape(-1)
    n = x.size
    if n >= lanes:
        vs = n // lanes
        vacc = _row_sum(lambda i: x[i * lanes : (i + 1) * lanes], vs, lambda: np.zeros(lanes, F32))
        acc = F32(0)
        for k in range(vs * lanes, n):
            acc = F32(acc + x[k])
        for k in range(lanes):
            acc = F32(acc + vacc[k])
        return acc
    return F32(_row_sum(lambda i: x[i], n, lambda: F32(0)))


def ref_double_quant(absmax, nested_code):
    """quantize_4bit(compress_statistics=True): offset = absmax.mean(), then 8-bit blockwise
    quantization (C++ CPU kernel, blocksize 256, dynamic signed map) of absmax - offset."""
    offset = F32(ref_torch_sum_f32(absmax) / F32(absmax.size))
    q, nested = ref_quantize_blockwise_cpu((absmax - offset).astype(F32), nested_code, NESTED_BLOCKSIZE)
    return q, nested, offset


def ref_nested_absmax(q, nested, offset, nested_code):
    return (ref_dequantize_blockwise(q, nested, nested_code, NESTED_BLOCKSIZE) + offset).astype(F32)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def f32(x):
    """float32 scalar -> shortest decimal that round-trips as f32, as a JSON number."""
    return float(np.format_float_positional(np.float32(x), unique=True, trim="-")) if math.isfinite(x) else None


def f32list(t):
    return [f32(v) for v in torch.as_tensor(t).reshape(-1).tolist()]


def bits_equal(a, b):
    a = np.ascontiguousarray(np.asarray(a))
    b = np.ascontiguousarray(np.asarray(b))
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def values_equal(a, b):
    """Equal as numbers (-0.0 == 0.0), same shape."""
    a = np.asarray(a)
    b = np.asarray(b)
    return a.shape == b.shape and bool(np.all(a == b))


def bnb_default_dequantize_4bit(packed, absmax, quant_type, shape):
    """bitsandbytes' portable dequantize_4bit (backends/default), without torch.compile."""
    code = BF.get_4bit_type(quant_type, device="cpu")
    fn = getattr(_dequantize_4bit_compute, "__wrapped__", _dequantize_4bit_compute)
    return fn(packed.reshape(-1).view(torch.uint8), absmax, code, BLOCKSIZE, tuple(shape), torch.float32)


def nested_absmax_of(qs):
    """float32 absmax of a QuantState, as bitsandbytes' dequantize_4bit computes it."""
    if not qs.nested:
        return qs.absmax
    a = BF.dequantize_blockwise(qs.absmax, qs.state2)
    a += qs.offset
    return a


# --------------------------------------------------------------------------------------------
# a) quantize.json + quantize.safetensors
# --------------------------------------------------------------------------------------------


def make_inputs():
    torch.manual_seed(20240613)
    inputs = {}
    inputs["normal_64x64"] = (torch.randn(64, 64), "N(0,1), 64 full blocks, row = block")
    inputs["normal_32x48"] = (
        torch.randn(32, 48) * 0.5,
        "N(0,0.25), 1536 elements = 24 blocks that span rows (48 columns)",
    )
    inputs["normal_7x100"] = (torch.randn(7, 100), "N(0,1), 700 elements: 10 full blocks + a last block of 60")
    inputs["normal_5x13"] = (
        torch.randn(5, 13),
        "N(0,1), 65 elements: odd count (pad nibble) and a last block of 1 element",
    )
    z = torch.randn(3, 64)
    z[1] = 0.0
    inputs["zero_block_3x64"] = (z, "N(0,1) with the middle row (one whole block) all zeros (absmax 0)")
    mag = torch.pow(10.0, torch.rand(4, 300) * 6.0 - 3.0)
    sign = torch.where(torch.rand(4, 300) < 0.5, -1.0, 1.0)
    inputs["wide_range_4x300"] = (
        (mag * sign).float(),
        "random sign x 10^U(-3,3): magnitudes 1e-3..1e3, 18 full blocks + a last block of 48",
    )
    inputs["normal_600x64"] = (
        torch.randn(600, 64) * 0.05,
        "N(0,0.05^2), 600 blocks: double quantization has 3 nested blocks of 256, 256, 88",
    )
    return {k: (v.contiguous().float(), d) for k, (v, d) in inputs.items()}


def make_quantize(ver):
    inputs = make_inputs()
    tensors = {}
    cases = []
    avx512_dequant_mismatch = []
    nested_code_ref = None
    for name, (x, _) in inputs.items():
        tensors[f"input/{name}"] = x
    for name, (x, _) in inputs.items():
        for qt in ("nf4", "fp4"):
            ref_packed, ref_absmax = ref_quantize_4bit(x.numpy(), BLOCKSIZE, qt)
            for dq in (False, True):
                case = f"{name}_{qt}_{'dq' if dq else 'nodq'}"
                packed, qs = BF.quantize_4bit(x, blocksize=BLOCKSIZE, quant_type=qt, compress_statistics=dq)
                packed2, qs2 = BF.quantize_4bit(x, blocksize=BLOCKSIZE, quant_type=qt, compress_statistics=dq)
                assert torch.equal(packed, packed2) and torch.equal(qs.absmax, qs2.absmax), f"{case}: not deterministic"
                n = x.numel()
                assert packed.dtype == torch.uint8 and tuple(packed.shape) == ((n + 1) // 2, 1), packed.shape
                assert bits_equal(packed.reshape(-1).numpy(), ref_packed), f"{case}: packed differs from ref"
                keys = {"packed": packed.reshape(-1).contiguous(), "code": qs.code.float().contiguous()}
                assert bits_equal(qs.code.numpy(), ref_code(qt)), f"{case}: code"
                if dq:
                    nested_code = qs.state2.code.float().contiguous()
                    ref_dynamic_map_check(nested_code.numpy())
                    if nested_code_ref is None:
                        nested_code_ref = nested_code
                    assert torch.equal(nested_code, nested_code_ref)
                    rq, rn, ro = ref_double_quant(ref_absmax, nested_code.numpy())
                    assert qs.state2.blocksize == NESTED_BLOCKSIZE
                    assert bits_equal(np.float32(qs.offset.item()), ro), f"{case}: offset {qs.offset.item()} vs {ro}"
                    assert bits_equal(qs.absmax.numpy(), rq), f"{case}: quantized absmax differs from ref"
                    assert bits_equal(qs.state2.absmax.numpy(), rn), f"{case}: nested absmax differs from ref"
                    keys["absmax"] = qs.absmax.contiguous()
                    keys["nested_absmax"] = qs.state2.absmax.float().contiguous()
                    keys["offset"] = qs.offset.reshape(1).float().contiguous()
                    keys["nested_code"] = nested_code
                    eff_absmax = ref_nested_absmax(rq, rn, ro, nested_code.numpy())
                    assert bits_equal(nested_absmax_of(qs).numpy(), eff_absmax)
                else:
                    assert bits_equal(qs.absmax.numpy(), ref_absmax), f"{case}: absmax differs from ref"
                    keys["absmax"] = qs.absmax.contiguous()
                    eff_absmax = ref_absmax
                # dequantize: bitsandbytes' portable implementation (see the module docstring)
                deq = bnb_default_dequantize_4bit(packed, torch.from_numpy(eff_absmax), qt, x.shape)
                ref_deq = ref_dequantize_4bit(ref_packed, eff_absmax, qt, n, BLOCKSIZE).reshape(x.shape)
                assert values_equal(deq.numpy(), ref_deq), f"{case}: dequantized differs from ref"
                kernel = BF.dequantize_4bit(packed, qs)
                if not values_equal(kernel.numpy(), ref_deq):
                    avx512_dequant_mismatch.append(case)
                keys["dequantized"] = deq.float().contiguous()
                for k, v in keys.items():
                    tensors[f"{case}/{k}"] = v
                cases.append(
                    {
                        "case": case,
                        "input": name,
                        "shape": list(x.shape),
                        "numel": n,
                        "quant_type": qt,
                        "double_quant": dq,
                        "blocksize": BLOCKSIZE,
                        "nested_blocksize": NESTED_BLOCKSIZE if dq else None,
                        "blocks": -(-n // BLOCKSIZE),
                        "nested_blocks": -(-(-(-n // BLOCKSIZE)) // NESTED_BLOCKSIZE) if dq else None,
                        "offset": f32(qs.offset.item()) if dq else None,
                        "keys": sorted(keys),
                        "max_abs_error": f32(float((deq - x).abs().max())),
                    }
                )
    doc = {
        "format": "qlora_quantize/v1",
        "set": "fixtures",
        "generator": "tools/make_qlora_fixtures.py",
        "versions": ver,
        "function": "bitsandbytes.functional.quantize_4bit(A, blocksize=64, quant_type=..., "
        "compress_statistics=...) on CPU float32 tensors; quant_storage uint8",
        "inputs": {
            name: {"key": f"input/{name}", "shape": list(x.shape), "description": d}
            for name, (x, d) in inputs.items()
        },
        "seed": "torch.manual_seed(20240613), inputs drawn in the order listed",
        "key_descriptions": {
            "input/<input>": "F32, the input's shape: the tensor A given to quantize_4bit",
            "<case>/packed": "U8 [(numel+1)/2]: the packed 4-bit codes, flattened from bnb's "
            "[(numel+1)/2, 1]; byte i = code(2i) << 4 | code(2i+1) over the row-major flat input; "
            "an odd count pads one 0.0 (nf4 nibble 7, fp4 nibble 0)",
            "<case>/absmax": "nodq: F32 [blocks], the per-block absmax (max |x| of each 64-block "
            "of the flat input; a last partial block's is clamped to >= 1e-38, a full all-zero "
            "block's is 0). dq: U8 [blocks], the 8-bit codes of absmax - offset",
            "<case>/nested_absmax": "dq only: F32 [ceil(blocks/256)], max |absmax - offset| per "
            "256-block",
            "<case>/offset": "dq only: F32 [1], mean of the float32 absmax (torch.mean)",
            "<case>/nested_code": "dq only: F32 [256], the 8-bit map (create_dynamic_map(signed="
            "True)), sorted ascending",
            "<case>/code": "F32 [16], the 4-bit code table in nibble order (quant_state.code)",
            "<case>/dequantized": "F32, the input's shape: dequantize_4bit(packed, quant_state) "
            "as bitsandbytes' portable implementation computes it: code[nibble] * absmax[i / 64], "
            "with absmax = nested_code[q] * nested_absmax[j / 256] + offset when dq",
        },
        "notes": [
            "The float32 absmax of a dq case before double quantization is the absmax of the "
            "nodq case with the same input and quant type.",
            "bitsandbytes 0.50.2's C++ dequantize_4bit kernel on AVX-512 CPUs gives other values "
            "for inputs whose last dimension is a multiple of 16 but not of 64 (normal_32x48 "
            "here): it indexes absmax per row. `dequantized` is the correct flat-block result "
            "(bnb's default backend and its scalar C++ path). Compare as numbers: the C++ fp4 "
            "table has -0.0 at nibble 8.",
        ],
        "cases": cases,
    }
    return doc, tensors, avx512_dequant_mismatch


def quant_edge_checks():
    """Spec claims checked against bitsandbytes directly (printed, not written)."""
    out = []
    for qt in ("nf4", "fp4"):
        mid, order = ref_bounds(qt)
        # a block with absmax exactly 1 and values on / just around every midpoint
        vals = [1.0]
        for m in mid:
            vals += [float(m), float(np.nextafter(m, F32(-2))), float(np.nextafter(m, F32(2)))]
        vals += [0.0, -0.0, 1e-30, -1e-30]
        while len(vals) % 64:
            vals.append(0.0)
        a = torch.tensor(vals, dtype=torch.float32)
        p, qs = BF.quantize_4bit(a, blocksize=64, quant_type=qt)
        rp, ra = ref_quantize_4bit(a.numpy(), 64, qt)
        ok = bits_equal(p.reshape(-1).numpy(), rp) and bits_equal(qs.absmax.numpy(), ra)
        out.append(f"{qt}: midpoint ties / neighbours / signed zeros: bnb == ref: {ok}")
        assert ok
        # lower code on an exact midpoint
        q = np.empty(p.numel() * 2, np.int64)
        q[0::2] = p.reshape(-1).numpy() >> 4
        q[1::2] = p.reshape(-1).numpy() & 15
        code = ref_code(qt)
        on_mid = q[1 : 1 + 3 * len(mid) : 3]
        lower = [int(order[i]) for i in range(len(mid))]
        out.append(f"{qt}: value == midpoint k -> code of sorted index k (lower): {on_mid.tolist() == lower}")
        assert on_mid.tolist() == lower
        if qt == "fp4":
            t = torch.zeros(64)
            t[0] = 1.0
            t[1] = 1e-3  # scaled 1e-3 in (0, 0.0026]: nibble 8 (the "-0" code)
            t[2] = -1e-3  # in (-0.0026, 0]: nibble 0
            p, _ = BF.quantize_4bit(t, blocksize=64, quant_type="fp4")
            b = p.reshape(-1)[0:2].tolist()
            out.append(f"fp4: +1e-3 -> nibble {b[0] & 15}, -1e-3 -> nibble {b[1] >> 4} (0 -> 0)")
            assert b[0] & 15 == 8 and b[1] >> 4 == 0
        del code
    # random stress: many shapes, both types, dq
    g = torch.Generator().manual_seed(7)
    cnt = 0
    for n in [1, 2, 3, 63, 64, 65, 127, 129, 640, 1000, 4097, 16448, 16449, 20000]:
        for qt in ("nf4", "fp4"):
            a = torch.randn(n, generator=g) * torch.rand(n, generator=g) ** 3 * 10
            p, qs = BF.quantize_4bit(a, blocksize=64, quant_type=qt, compress_statistics=True)
            rp, ra = ref_quantize_4bit(a.numpy(), 64, qt)
            rq, rn, ro = ref_double_quant(ra, qs.state2.code.numpy())
            assert bits_equal(p.reshape(-1).numpy(), rp), (n, qt)
            assert bits_equal(qs.absmax.numpy(), rq), (n, qt)
            assert bits_equal(qs.state2.absmax.numpy(), rn), (n, qt)
            assert bits_equal(np.float32(qs.offset.item()), ro), (n, qt)
            cnt += 1
    # 8-bit blockwise on values crafted around the LUT's bins
    code = BF.create_dynamic_map(signed=True)
    lut_vals = []
    for i in range(0, 65536, 7):
        v = np.float32(-1 + 2 * i / 65535)
        lut_vals += [v, np.nextafter(v, F32(2)), np.nextafter(v, F32(-2))]
    a = torch.tensor(np.clip(np.array(lut_vals, F32), -1, 1))
    a[0] = 1.0
    q, st = BF.quantize_blockwise(a, code=code, blocksize=256)
    rq, ra = ref_quantize_blockwise_cpu(a.numpy(), code.numpy(), 256)
    ok = bits_equal(q.numpy(), rq) and bits_equal(st.absmax.numpy(), ra)
    out.append(f"quantize_blockwise (C++ LUT + fma) on {a.numel()} values at LUT bin edges: bnb == ref: {ok}")
    assert ok
    # exact nearest vs the LUT: how often they differ (informational)
    a = torch.rand(200000, generator=g) * 2 - 1
    a[::256] = 1.0  # every block's absmax is 1: the scaled values are the values
    q, _ = BF.quantize_blockwise(a, code=code, blocksize=256)
    sc = a.numpy().reshape(-1)
    nearest = np.abs(sc[:, None] - code.numpy()[None, :]).argmin(axis=1)
    diff = int((nearest != q.numpy()).sum())
    out.append(f"quantize_blockwise: LUT code != exact nearest code for {diff} of 200000 uniform values")
    # torch.sum emulation
    bad = 0
    for n in list(range(1, 200)) + [255, 256, 257, 600, 1024, 4096, 9999, 32000]:
        x = torch.rand(n, generator=g) * 3
        if not bits_equal(np.float32(x.sum().item()), ref_torch_sum_f32(x.numpy())):
            bad += 1
        if not bits_equal(np.float32(x.mean().item()), F32(ref_torch_sum_f32(x.numpy()) / F32(n))):
            bad += 1
    out.append(f"torch.sum / torch.mean float32 emulation mismatches: {bad}")
    assert bad == 0
    # quant_storage only reinterprets the bytes
    a = torch.randn(4, 64, generator=g)
    p8, _ = BF.quantize_4bit(a, blocksize=64, quant_type="nf4")
    pb, _ = BF.quantize_4bit(a, blocksize=64, quant_type="nf4", quant_storage=torch.bfloat16)
    ok = pb.dtype == torch.bfloat16 and tuple(pb.shape) == (64, 1) and torch.equal(pb.reshape(-1).view(torch.uint8), p8.reshape(-1))
    out.append(f"quant_storage=bfloat16: same bytes viewed as [{pb.shape[0]}, 1] bf16: {ok}")
    assert ok
    out.append(f"random double-quant stress cases bit-exact: {cnt}")
    return out


# --------------------------------------------------------------------------------------------
# b), c) QLoRA goldens
# --------------------------------------------------------------------------------------------


def seq_logps(logits, ids, completion_mask):
    """sum_t completion_mask[t] * log_softmax(logits[t-1])[ids[t]] (README section 4)."""
    lp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    tok = lp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return (tok * completion_mask[:, 1:].to(tok.dtype)).sum(-1)


def dpo(model, batch, beta=0.1):
    def fwd(side):
        ids = torch.tensor(batch[side]["input_ids"])
        am = torch.tensor(batch[side]["attention_mask"])
        cm = torch.tensor(batch[side]["completion_mask"])
        return seq_logps(model(input_ids=ids, attention_mask=am).logits, ids, cm)

    with torch.no_grad(), model.disable_adapter():
        rc = fwd("chosen")
        rr = fwd("rejected")
    pc = fwd("chosen")
    pr = fwd("rejected")
    logits = (pc - pr) - (rc - rr)
    losses = -torch.nn.functional.logsigmoid(beta * logits)  # label_smoothing 0
    return losses.mean(), losses, pc, pr, rc, rr


def lora_params(model):
    out = {}
    for name, p in model.named_parameters():
        if "lora_A" in name or "lora_B" in name:
            out[name.replace(".default.", ".")] = p
    return out


def load_float(base_dir, adapter_dir, replace=None):
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32, attn_implementation="eager")
    if replace:
        sd = base.state_dict()
        with torch.no_grad():
            for k, v in replace.items():
                sd[k].copy_(v)
    return PeftModel.from_pretrained(base, adapter_dir, is_trainable=True)


def make_qlora(name, base_rel, adapter_rel, quant_type, double_quant, ver, batch, sdpo_ref=None):
    base_dir = OUT / base_rel
    adapter_dir = OUT / adapter_rel
    gold = load_file(str(adapter_dir / "golden.safetensors"))
    ids, am = gold["input_ids"], gold["attention_mask"]
    report = {}

    # float32 (unquantized) base + adapter: reference figures and the self-checks
    fmodel = load_float(base_dir, adapter_dir)
    fmodel.eval()
    with torch.no_grad():
        float_on = fmodel(input_ids=ids, attention_mask=am).logits
        with fmodel.disable_adapter():
            float_off = fmodel(input_ids=ids, attention_mask=am).logits
    report["float_logits_vs_lora_golden_max_abs_diff"] = float((float_on - gold["logits"]).abs().max())
    self_check = None
    if sdpo_ref is not None:
        loss, losses, *_ = dpo(fmodel, batch)
        loss.backward()
        ref0 = [r for r in sdpo_ref["results"] if r["threshold"] == 0.0][0]
        old = load_file(str(adapter_dir / "sdpo_grads.safetensors"))
        grel = 0.0
        for k, p in lora_params(fmodel).items():
            g_old = old[f"q0.0/{k}"]
            grel = max(grel, float((p.grad - g_old).abs().max() / g_old.abs().max()))
        self_check = {
            "what": "this script's DPO on the float32 base (no quantization) vs "
            f"{adapter_rel}/golden.json sdpo.results[threshold 0.0] and sdpo_grads.safetensors q0.0",
            "loss_mean": f32(loss.item()),
            "expected_loss_mean": ref0["loss_mean"],
            "losses": f32list(losses),
            "expected_losses": ref0["losses"],
            "loss_max_abs_diff": max(
                abs(loss.item() - ref0["loss_mean"]),
                max(abs(a - b) for a, b in zip(losses.tolist(), ref0["losses"])),
            ),
            "grads_max_rel_diff": grel,
        }
        print(f"[{name}] self-check (float32 base): loss_mean {loss.item():.9g} vs {ref0['loss_mean']}, "
              f"losses {[round(v, 7) for v in losses.tolist()]} vs {ref0['losses']}, "
              f"grads max rel diff {grel:.3g}")
        assert self_check["loss_max_abs_diff"] < 1e-5 and grel < 1e-4, self_check
    float_sd = load_file(str(base_dir / "model.safetensors"))
    del fmodel

    # 4-bit base
    cfg = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant_type,
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=torch.float32,
    )
    base = AutoModelForCausalLM.from_pretrained(
        base_dir, quantization_config=cfg, device_map="cpu", dtype=torch.float32, attn_implementation="eager"
    )
    tensors = {"input_ids": ids, "attention_mask": am}
    quantized, unquantized = [], []
    deq_weights = {}
    nested_code = None
    for mname, m in base.named_modules():
        if isinstance(m, bnb.nn.Linear4bit):
            quantized.append(mname)
            w = m.weight
            qs = w.quant_state
            assert qs.blocksize == BLOCKSIZE and qs.quant_type == quant_type and qs.nested == double_quant
            assert w.dtype == torch.uint8, w.dtype
            shape = tuple(qs.shape)
            src = float_sd[mname + ".weight"].numpy()
            rp, ra = ref_quantize_4bit(src, BLOCKSIZE, quant_type)
            assert bits_equal(w.data.reshape(-1).numpy(), rp), f"{mname}: packed differs from ref"
            pre = f"quant/{mname}"
            tensors[f"{pre}/packed"] = w.data.reshape(-1).contiguous().clone()
            tensors[f"{pre}/absmax"] = qs.absmax.contiguous().clone()
            if double_quant:
                nested_code = qs.state2.code
                rq, rn, ro = ref_double_quant(ra, qs.state2.code.numpy())
                assert bits_equal(qs.absmax.numpy(), rq) and bits_equal(qs.state2.absmax.numpy(), rn)
                assert bits_equal(np.float32(qs.offset.item()), ro)
                tensors[f"{pre}/nested_absmax"] = qs.state2.absmax.float().contiguous().clone()
                tensors[f"{pre}/offset"] = qs.offset.reshape(1).float().contiguous().clone()
                eff = ref_nested_absmax(rq, rn, ro, qs.state2.code.numpy())
            else:
                assert bits_equal(qs.absmax.numpy(), ra)
                eff = ra
            deq = BF.dequantize_4bit(w.data, qs)  # every layer here has in_features % 64 == 0
            ref = ref_dequantize_4bit(rp, eff, quant_type, int(np.prod(shape)), BLOCKSIZE).reshape(shape)
            assert values_equal(deq.numpy(), ref), f"{mname}: dequantized differs from ref"
            tensors[f"{pre}/dequantized"] = deq.float().contiguous().clone()
            deq_weights[mname + ".weight"] = deq.float().clone()
            m.support_avx512bf16_for_cpu = False  # the portable float32 path, see docstring
        elif isinstance(m, torch.nn.Linear):
            unquantized.append(mname)

    model = PeftModel.from_pretrained(base, adapter_dir, is_trainable=True)
    model.eval()
    adapter_dtypes = sorted({str(p.dtype) for p in lora_params(model).values()})
    for p in lora_params(model).values():
        if p.dtype != torch.float32:
            p.data = p.data.float()
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=am).logits
        with model.disable_adapter():
            logits_off = model(input_ids=ids, attention_mask=am).logits
    tensors["logits"] = logits.contiguous()
    tensors["logits_adapter_disabled"] = logits_off.contiguous()
    valid = am.bool()
    adapter_vs_base = float((logits - logits_off)[valid].abs().max())
    q_vs_f_on = float((logits - float_on)[valid].abs().max())
    q_vs_f_off = float((logits_off - float_off)[valid].abs().max())

    # the same float32 model with every quantized weight replaced by its dequantized value
    dmodel = load_float(base_dir, adapter_dir, replace=deq_weights)
    dmodel.eval()
    with torch.no_grad():
        d_on = dmodel(input_ids=ids, attention_mask=am).logits
        with dmodel.disable_adapter():
            d_off = dmodel(input_ids=ids, attention_mask=am).logits
    deq_model_diff = max(float((d_on - logits).abs().max()), float((d_off - logits_off).abs().max()))
    del dmodel

    # DPO on the 4-bit model
    loss, losses, pc, pr, rc, rr = dpo(model, batch)
    loss.backward()
    grads = {k: p.grad.detach().contiguous().clone() for k, p in lora_params(model).items()}
    assert all(torch.isfinite(g).all() for g in grads.values())

    # informational: the AVX512-BF16 inference path bitsandbytes takes by default on this CPU
    bf16_info = None
    if BF.has_avx512bf16():
        for m in base.modules():
            if isinstance(m, bnb.nn.Linear4bit):
                m.support_avx512bf16_for_cpu = True
        with torch.no_grad():
            fast = model(input_ids=ids, attention_mask=am).logits
        bf16_info = float((fast - logits)[valid].abs().max())

    print(f"[{name}] quantized {len(quantized)} linear modules, unquantized: {unquantized}; "
          f"adapter dtype after loading: {adapter_dtypes}")
    print(f"[{name}] adapter_vs_base_max_abs_diff {adapter_vs_base:.6g}; |logits_4bit - logits_float32| max "
          f"{q_vs_f_on:.6g} (adapter on), {q_vs_f_off:.6g} (adapter disabled); "
          f"float model with dequantized weights vs 4-bit model: {deq_model_diff:.3g}")
    print(f"[{name}] float32 base+adapter vs lora golden logits: {report['float_logits_vs_lora_golden_max_abs_diff']:.3g}")
    print(f"[{name}] DPO on the 4-bit model: loss_mean {loss.item():.9g}, losses {losses.tolist()}")
    if bf16_info is not None:
        print(f"[{name}] (not written) bitsandbytes' default AVX512-BF16 eval path on this CPU differs "
              f"from the float32 path by up to {bf16_info:.4g} in the logits")

    d = QDIR / name
    d.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(d / "golden.safetensors"))
    save_file(grads, str(d / "dpo_grads.safetensors"))
    golden = {
        "format": "qlora_golden/v1",
        "set": "fixtures",
        "generator": "tools/make_qlora_fixtures.py",
        "versions": ver,
        "base_model_dir": base_rel,
        "adapter_dir": adapter_rel,
        "attn_implementation": "eager",
        "bnb_config": {
            "load_in_4bit": True,
            "bnb_4bit_quant_type": quant_type,
            "bnb_4bit_use_double_quant": double_quant,
            "bnb_4bit_compute_dtype": "float32",
            "bnb_4bit_quant_storage": "uint8",
        },
        "load": "AutoModelForCausalLM.from_pretrained(base, quantization_config=BitsAndBytesConfig(...), "
        "device_map='cpu', dtype=torch.float32, attn_implementation='eager'); "
        "PeftModel.from_pretrained(base, adapter, is_trainable=True); eval mode; "
        "Linear4bit.support_avx512bf16_for_cpu = False",
        "blocksize": BLOCKSIZE,
        "nested_blocksize": NESTED_BLOCKSIZE if double_quant else None,
        "quantized_modules": quantized,
        "unquantized_linear_modules": unquantized,
        "unquantized_note": "only nn.Linear modules are converted; transformers skips the output "
        "embedding (lm_head), the last parameter's module and tied weights; embeddings and norms "
        "are never Linear4bit",
        "adapter_dtype": "float32",
        "adapter_dtype_after_loading": adapter_dtypes,
        "input_ids": ids.tolist(),
        "attention_mask": am.tolist(),
        "adapter_vs_base_max_abs_diff": adapter_vs_base,
        "quant_vs_float_max_abs_diff": {"adapter_on": q_vs_f_on, "adapter_disabled": q_vs_f_off},
        "dequantized_float_model_vs_4bit_max_abs_diff": deq_model_diff,
        "nested_code": f32list(nested_code) if nested_code is not None else None,
        "dpo": {
            "loss_type": "sigmoid",
            "beta": 0.1,
            "label_smoothing": 0.0,
            "reference": "the same 4-bit model with the adapter disabled (model.disable_adapter())",
            "batch_from": "lora/llama_r4/golden.json sdpo.chosen / sdpo.rejected",
            "logps": "per sequence: sum over t >= 1 with completion_mask[t] == 1 of "
            "log_softmax(logits[t-1])[input_ids[t]] (README section 4); chosen and rejected run as "
            "two batches of 3",
            "chosen": batch["chosen"],
            "rejected": batch["rejected"],
            "loss_mean": f32(loss.item()),
            "losses": f32list(losses),
            "chosen_logps": f32list(pc),
            "rejected_logps": f32list(pr),
            "ref_chosen_logps": f32list(rc),
            "ref_rejected_logps": f32list(rr),
            "grads_file": "dpo_grads.safetensors",
        },
    }
    if self_check is not None:
        golden["self_check"] = self_check
    (d / "golden.json").write_text(json.dumps(golden, indent=1) + "\n")
    return golden


def main():
    check_versions()
    ver = versions()
    QDIR.mkdir(parents=True, exist_ok=True)
    for line in quant_edge_checks():
        print("[edge]", line)
    doc, tensors, mism = make_quantize(ver)
    save_file({k: v.contiguous().clone() for k, v in tensors.items()}, str(QDIR / "quantize.safetensors"))
    (QDIR / "quantize.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(f"[quantize] {len(doc['cases'])} cases; bnb's C++ dequantize_4bit kernel differs from the "
          f"flat-block result on this CPU for: {mism or 'none'}")
    lj = json.loads((OUT / "lora/llama_r4/golden.json").read_text())
    batch = {"chosen": lj["sdpo"]["chosen"], "rejected": lj["sdpo"]["rejected"]}
    make_qlora("llama_nf4_dq", "models/llama", "lora/llama_r4", "nf4", True, ver, batch, sdpo_ref=lj["sdpo"])
    make_qlora("qwen2_fp4", "models/qwen2", "lora/qwen2_r8_rslora", "fp4", False, ver, batch)
    for p in sorted(QDIR.rglob("*")):
        if p.is_file():
            print(f"{hashlib.sha256(p.read_bytes()).hexdigest()[:16]}  {p.stat().st_size:8d}  {p.relative_to(OUT)}")


if __name__ == "__main__":
    main()
