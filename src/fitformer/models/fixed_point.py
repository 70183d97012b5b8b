"""Fixed-point arithmetic of the FPGA datapath, simulated in PyTorch (design.md §4).

``fxW`` (W = 16 or 8) is per-tensor ``ap_fixed<W, I>`` (Xilinx Vivado HLS UG902, 2019:
``W`` bits in all, ``I`` integer bits including the sign) with round-to-nearest and
saturation (``AP_RND``, ``AP_SAT``). ``I = floor(log2(max_abs)) + 2``: one bit for the sign
and enough integer bits for ``max_abs``.

Quantised tensors: the weight of every linear layer (``max_abs`` from the weight itself) and
the activations entering a multiplier array: the input of every linear layer, the Q, K and V
operands of ``QK^T`` and ``AV``, and the attention probabilities entering ``AV``; their
``max_abs`` comes from calibration on 256 training sentences. Softmax, layer norm, GELU,
biases and accumulators stay fp32 (separate, wider hardware units). This is evaluation only
(no retraining).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

PRECISIONS = ("fp32", "fx16", "fx8")
_ATTN_NAME = "fitformer_fixed_point"


def width_of(precision: str) -> int | None:
    """Bits of a precision name: ``fx16`` -> 16, ``fp32`` -> ``None`` (floating point)."""
    if precision == "fp32":
        return None
    if precision.startswith("fx") and precision[2:].isdigit():
        return int(precision[2:])
    raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")


def int_bits(max_abs: float) -> int:
    """Integer bits (sign included) of ``ap_fixed<W, I>`` for values up to ``max_abs``:
    ``floor(log2(max_abs)) + 2`` (design.md §4); 1 for an all-zero tensor."""
    if not max_abs > 0 or not math.isfinite(max_abs):
        return 1
    return math.floor(math.log2(max_abs)) + 2


def quantize_fixed(x: torch.Tensor, width: int, int_bits_: int) -> torch.Tensor:
    """Round ``x`` to ``ap_fixed<width, int_bits_>`` (nearest, saturating); same dtype.

    The grid step is ``2 ** (int_bits_ - width)``; the range is
    ``[-2 ** (int_bits_ - 1), 2 ** (int_bits_ - 1) - step]``.
    """
    step = 2.0 ** (int_bits_ - width)
    lo = -(2.0 ** (int_bits_ - 1))
    hi = 2.0 ** (int_bits_ - 1) - step
    return torch.clamp(torch.round(x / step) * step, lo, hi)


@dataclass
class Calibration:
    """``max_abs`` of every quantised activation, keyed ``<module>.input`` (linear inputs),
    ``<module>.output`` (Q/K/V projections) and ``<attention>.probs``."""

    max_abs: dict[str, float] = field(default_factory=dict)

    def observe(self, key: str, x: torch.Tensor) -> None:
        v = float(x.detach().abs().max()) if x.numel() else 0.0
        self.max_abs[key] = max(self.max_abs.get(key, 0.0), v)

    def int_bits(self) -> dict[str, int]:
        return {k: int_bits(v) for k, v in self.max_abs.items()}


def _fixed_point_attention(module, query, key, value, attention_mask, scaling=None,
                           dropout=0.0, **kwargs):
    """Eager scaled-dot-product attention with a hook on Q, K, V and the probabilities."""
    hook = getattr(module, "_fitformer_attention_hook", None)
    if hook is not None:
        query, key, value = hook("q", query), hook("k", key), hook("v", value)
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:  # True = attend (the library's sdpa-style mask)
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    probs = nn.functional.softmax(scores, dim=-1)
    if hook is not None:
        probs = hook("probs", probs)
    probs = nn.functional.dropout(probs, p=dropout, training=module.training)
    out = torch.matmul(probs, value).transpose(1, 2).contiguous()
    return out, probs


def _register_attention() -> None:
    """Register the attention function and its mask format (eager: additive float) with
    ``transformers`` under one name; without a mask function the library passes no mask."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(_ATTN_NAME, _fixed_point_attention)
    AttentionMaskInterface.register(_ATTN_NAME, eager_mask)


def _attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Attention modules: BERT naming (``query``/``key``/``value``) or BART / Marian
    (``q_proj``/``k_proj``/``v_proj``, self- and cross-attention)."""
    return [(n, m) for n, m in model.named_modules()
            if isinstance(getattr(m, "query", None), nn.Linear)
            or isinstance(getattr(m, "q_proj", None), nn.Linear)]


@contextlib.contextmanager
def _instrumented(model: nn.Module, linear_pre, attention_hook) -> Iterator[None]:
    """Install ``linear_pre(name, x)`` on every linear input and ``attention_hook(name)``
    on every attention module, with the fixed-point attention function; undo on exit."""
    _register_attention()
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            handles.append(m.register_forward_pre_hook(
                lambda mod, args, name=name: (linear_pre(name, args[0]),) + tuple(args[1:])))
    attn = _attention_modules(model)
    for name, m in attn:
        m._fitformer_attention_hook = attention_hook(name)
    previous = model.config._attn_implementation
    model.config._attn_implementation = _ATTN_NAME
    try:
        yield
    finally:
        model.config._attn_implementation = previous
        for _, m in attn:
            del m._fitformer_attention_hook
        for h in handles:
            h.remove()


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> Calibration:
    """Record ``max_abs`` of every quantised activation over ``batches`` (fp32, eval mode).

    Args:
        model: a ``transformers`` encoder classifier or encoder-decoder (its batches carry
            ``labels``, which become the decoder inputs).
        batches: tokenised input dicts (``input_ids``, ``attention_mask``, ...), e.g. 256
            training sentences (design.md §4).
    """
    cal = Calibration()

    def linear_pre(name, x):
        cal.observe(f"{name}.input", x)
        return x

    def attention_hook(name):
        def hook(which, x):
            cal.observe(f"{name}.{which}", x)
            return x
        return hook

    was_training = model.training
    model.eval()
    with _instrumented(model, linear_pre, attention_hook):
        for batch in batches:
            # An encoder-decoder needs its labels: they are shifted into decoder inputs.
            if not getattr(model.config, "is_encoder_decoder", False):
                batch = {k: v for k, v in batch.items() if k != "labels"}
            model(**batch)
    model.train(was_training)
    return cal


@contextlib.contextmanager
def fixed_point(model: nn.Module, precision: str, calibration: Calibration | None
                ) -> Iterator[dict[str, int]]:
    """Run ``model`` in the fixed-point arithmetic of ``precision`` inside the block.

    Linear weights are quantised in place (restored on exit); activations are quantised by
    hooks. ``fp32`` changes nothing.

    Yields:
        tensor key -> integer bits ``I`` used (weights as ``<module>.weight``).

    Raises:
        ValueError: unknown precision, or a fixed-point precision without calibration.
    """
    width = width_of(precision)
    if width is None:
        yield {}
        return
    if calibration is None:
        raise ValueError("fixed-point evaluation needs a calibration (see calibrate())")
    bits = calibration.int_bits()
    saved: dict[str, torch.Tensor] = {}
    used: dict[str, int] = {}
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, nn.Linear):
                w = m.weight
                saved[name] = w.detach().clone()
                used[f"{name}.weight"] = int_bits(float(w.abs().max()))
                w.copy_(quantize_fixed(w, width, used[f"{name}.weight"]))

    def linear_pre(name, x):
        key = f"{name}.input"
        return quantize_fixed(x, width, bits[key]) if key in bits else x

    def attention_hook(name):
        def hook(which, x):
            key = f"{name}.{which}"
            return quantize_fixed(x, width, bits[key]) if key in bits else x
        return hook

    used.update(bits)
    try:
        with _instrumented(model, linear_pre, attention_hook):
            yield used
    finally:
        with torch.no_grad():
            for name, m in model.named_modules():
                if name in saved:
                    m.weight.copy_(saved[name])


# ---------------------------------------------------------------------------------------
# The exact reference path (issue 19): what the generated HLS C++ computes, bit for bit.
#
# The fake quantisation above rounds operands to the fixed-point grid but accumulates and
# runs the non-linear units in fp32 in the order MKL chooses, so no hardware can reproduce
# it bit for bit. The exact path below fixes every operation:
#
# * products and sums of the multiplier arrays (linears, QK^T, AV) are integer: operand
#   codes of ``ap_fixed<W, I>`` multiplied and summed exactly (fp64 BLAS on integer-valued
#   codes is exact while every partial sum stays below 2**53: ``N * 2**(2W - 2) < 2**53``,
#   i.e. up to 2**23 terms at fx16; checked);
# * biases are rounded to the accumulator's grid ``2**-(F_x + F_w)`` (ties to even), the
#   only change against the fake path's fp32 bias besides rounding order;
# * the non-linear units (exp, erf/GELU, tanh, softmax, layer norm, residual add) are one
#   fixed sequence of IEEE-754 binary32 operations (add, sub, mul, div, sqrt, floor,
#   ldexp; no fused multiply-add), sums taken sequentially in index order, so a C++ float
#   implementation of the same sequence (``-ffp-contract=off``) gives identical bits;
# * every rounding onto a fixed-point grid is round-to-nearest, ties to even, saturating
#   (``ap_fixed<W, I, AP_RND_CONV, AP_SAT>``, UG1399), as ``torch.round`` does above.
#
# Ulp bounds of the non-linear units (binary32, against the exact function; measured on a
# dense grid by tests/test_fixed_point.py): :func:`exp_f32` <= 2 ulp on [-87, 0];
# :func:`erf_f32` absolute error <= 5e-7 (Abramowitz & Stegun 1964, 7.1.26: 1.5e-7, plus
# the binary32 rounding of its steps, measured 4.6e-7); :func:`gelu_f32` absolute error
# <= 3e-7 * |x| + 2 ulp; :func:`tanh_f32` absolute error <= 1.5e-7. Softmax and layer
# norm add the rounding of their sequential sums (<= n ulp for n terms). Every value then
# feeding a multiplier is rounded to a W-bit grid whose step is at least 2**-15 times its
# range, so these errors change a code only when a value lies within ~1e-6 relative of a
# rounding boundary.
# ---------------------------------------------------------------------------------------

import numpy as np  # noqa: E402

F32 = np.float32
# exp(x), x <= 0: Cody & Waite (1980) range reduction x = n ln2 + r with ln2 split into a
# 9-bit head (n * head exact) and a tail; e**r by its Taylor polynomial of degree 7
# (|r| <= ln2 / 2: truncation 0.35**8 / 8! = 6e-9 relative).
EXP_LOG2E = F32(1.4426950408889634)
EXP_LN2_HI = F32(0.693359375)
EXP_LN2_LO = F32(-2.1219444005469057e-4)
EXP_POLY = tuple(F32(1.0 / math.factorial(i)) for i in range(7, -1, -1))  # c7 ... c0
EXP_MIN = F32(-87.0)
# erf: Abramowitz & Stegun (1964), 7.1.26, |error| <= 1.5e-7.
ERF_P = F32(0.3275911)
ERF_A = tuple(F32(a) for a in (1.061405429, -1.453152027, 1.421413741, -0.284496736,
                                0.254829592))                          # a5 ... a1
SQRT2 = F32(1.4142135623730951)


def exp_f32(x: np.ndarray) -> np.ndarray:
    """``e**x`` for float32 ``x <= 0`` (any shape), the exact path's exponential: 0 below
    -87 (the result would be subnormal), <= 2 ulp elsewhere (module note above)."""
    x = np.asarray(x, dtype=F32)
    n = np.floor(x * EXP_LOG2E + F32(0.5))
    r = (x - n * EXP_LN2_HI) - n * EXP_LN2_LO
    p = np.full_like(r, EXP_POLY[0])
    for c in EXP_POLY[1:]:
        p = p * r + c
    y = np.ldexp(p, n.astype(np.int32)).astype(F32)
    return np.where(x < EXP_MIN, F32(0.0), y).astype(F32)


def erf_f32(x: np.ndarray) -> np.ndarray:
    """``erf(x)`` for float32 ``x`` (A&S 7.1.26 with :func:`exp_f32`)."""
    x = np.asarray(x, dtype=F32)
    a = np.abs(x)
    t = F32(1.0) / (F32(1.0) + ERF_P * a)
    p = np.full_like(t, ERF_A[0])
    for c in ERF_A[1:]:
        p = p * t + c
    y = F32(1.0) - (p * t) * exp_f32(-(a * a))
    return np.where(x < 0, -y, y).astype(F32)


def gelu_f32(x: np.ndarray) -> np.ndarray:
    """GELU, ``x * 0.5 * (1 + erf(x / sqrt 2))`` (Hendrycks & Gimpel 2016), float32."""
    x = np.asarray(x, dtype=F32)
    return ((x * F32(0.5)) * (F32(1.0) + erf_f32(x / SQRT2))).astype(F32)


def tanh_f32(x: np.ndarray, exp=None) -> np.ndarray:
    """``tanh(x) = sign(x) (1 - e) / (1 + e)``, ``e = exp(-2|x|)``, float32, with ``exp``
    (default :func:`exp_f32`)."""
    x = np.asarray(x, dtype=F32)
    e = (exp or exp_f32)(F32(-2.0) * np.abs(x))
    y = (F32(1.0) - e) / (F32(1.0) + e)
    return np.where(x < 0, -y, y).astype(F32)


def seq_sum_f32(x: np.ndarray) -> np.ndarray:
    """Sum over the last axis, sequentially in index order (float32): the order the
    generated C++ loops use."""
    x = np.asarray(x, dtype=F32)
    s = np.zeros(x.shape[:-1], F32)
    for j in range(x.shape[-1]):
        s = s + x[..., j]
    return s


def softmax_f32(s: np.ndarray) -> np.ndarray:
    """Softmax over the last axis: ``exp(s - max) / sum`` with a sequential sum (float32)."""
    s = np.asarray(s, dtype=F32)
    e = exp_f32(s - s.max(axis=-1, keepdims=True))
    return (e / seq_sum_f32(e)[..., None]).astype(F32)


# fx16 table non-linear units (design.md §6: the accelerator's `nonlinear: fx16`): exp and
# the normal CDF by lookup with linear interpolation on 16-bit codes (NN-LUT, Yu et al., DAC
# 2022; integer-only BERT non-linearities, I-BERT, Kim et al., ICML 2021), the rest binary32.
#: exp(z), z in [-16, 0]: the input on ap_fixed<16, 5>'s grid (2**-11), segments of 1/64 (32
#: codes), table entries round(exp(-i/64) 2**15), i = 0..1024 (plus a guard entry).
EXP_FX16_FRAC, EXP_FX16_SEG_BITS = 11, 5
EXP_FX16_TABLE = np.asarray([round(math.exp(-i / 64) * 2 ** 15) for i in range(1025)] + [0],
                            np.int64)
#: Phi(x), x in [-8, 8]: the input on a 2**-11 grid, segments of 1/32 (64 codes), entries
#: round(Phi(-8 + i/32) 2**15), i = 0..512 (plus a guard entry).
PHI_FX16_FRAC, PHI_FX16_SEG_BITS, PHI_FX16_RANGE = 11, 6, 8
PHI_FX16_TABLE = np.asarray([round(0.5 * math.erfc((8 - i / 32) / math.sqrt(2)) * 2 ** 15)
                             for i in range(513)] + [2 ** 15], np.int64)
#: Bounds checked on dense grids by tests/test_fixed_point.py (absolute errors).
EXP_FX16_MAX_ERROR = 3e-4
PHI_FX16_MAX_ERROR = 1.4e-4


def _interpolate(table: np.ndarray, u: np.ndarray, seg_bits: int) -> np.ndarray:
    """Integer linear interpolation of ``table`` at codes ``u`` (int64, >= 0): segment
    ``u >> seg_bits``, offset ``u & (2**seg_bits - 1)``, rounded half up."""
    i, f = u >> seg_bits, u & ((1 << seg_bits) - 1)
    a, b = table[i], table[i + 1]
    return a + (((b - a) * f + (1 << (seg_bits - 1))) >> seg_bits)


def exp_fx16(x: np.ndarray) -> np.ndarray:
    """``e**x`` for float32 ``x <= 0`` by the fx16 table unit: ``x`` rounded (ties to even) onto
    a 2**-11 grid and clamped to [-16, 0], interpolated in :data:`EXP_FX16_TABLE`, the
    result a multiple of 2**-15 (exact in float32). Error <= :data:`EXP_FX16_MAX_ERROR`."""
    x = np.asarray(x, dtype=F32)
    u = np.rint(np.minimum(-x * F32(2 ** EXP_FX16_FRAC), F32(16 << EXP_FX16_FRAC)))
    y = _interpolate(EXP_FX16_TABLE, np.maximum(u, 0).astype(np.int64), EXP_FX16_SEG_BITS)
    return (y.astype(F32) * F32(2.0 ** -15)).astype(F32)


def gelu_fx16(x: np.ndarray) -> np.ndarray:
    """GELU ``x Phi(x)`` by the fx16 table unit: ``Phi`` from :data:`PHI_FX16_TABLE` (``x``
    rounded onto a 2**-11 grid, clamped to [-8, 8]; a multiple of 2**-15), then one binary32
    product with ``x``. ``|Phi error| <=`` :data:`PHI_FX16_MAX_ERROR`."""
    x = np.asarray(x, dtype=F32)
    lim = F32(PHI_FX16_RANGE << PHI_FX16_FRAC)
    u = np.rint(np.clip(x * F32(2 ** PHI_FX16_FRAC), -lim, lim)) + lim
    phi = _interpolate(PHI_FX16_TABLE, u.astype(np.int64), PHI_FX16_SEG_BITS)
    return (x * (phi.astype(F32) * F32(2.0 ** -15))).astype(F32)


def tanh_fx16(x: np.ndarray) -> np.ndarray:
    """``tanh`` from the fx16 exp unit: ``sign(x) (1 - e) / (1 + e)``, ``e = exp_fx16(-2|x|)``."""
    return tanh_f32(x, exp_fx16)


def softmax_fx16(s: np.ndarray) -> np.ndarray:
    """Softmax with the fx16 exp unit: the row's sum of exps is exact (multiples of 2**-15,
    at most 2**24 of them in float32's integer range, so any order gives it), then one
    reciprocal per row and one product per element."""
    s = np.asarray(s, dtype=F32)
    e = exp_fx16(s - s.max(axis=-1, keepdims=True))
    inv = F32(1.0) / seq_sum_f32(e)
    return (e * inv[..., None]).astype(F32)


def layer_norm_f32(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float,
                   reciprocal: bool = False) -> np.ndarray:
    """Layer norm over the last axis (float32, Ba et al. 2016; the biased variance, as
    ``torch.nn.LayerNorm``) from one-pass statistics, as the accelerator takes them while
    the rows drain (design.md §6): ``s = sum(x)`` and ``ss = sum(x * x)``, both
    sequential in index order, ``mean = s / n``, ``var = max(ss / n - mean**2, 0)``, then
    ``((x - mean) / sqrt(var + eps)) * gamma + beta``.

    One pass loses accuracy to cancellation only when ``mean**2 / var`` is large; on
    MiniLM's 13 layer norms it is at most 0.004 and the result is within 2e-5 of
    ``torch.nn.functional.layer_norm`` (measured 2026-12-01 on dev sentences, as the
    two-pass form is). ``reciprocal`` (the fx16 units): one ``1 / sd`` per row and a
    product per element instead of a division per element.
    """
    x = np.asarray(x, dtype=F32)
    n = F32(x.shape[-1])
    mean = seq_sum_f32(x) / n
    var = np.maximum(seq_sum_f32(x * x) / n - mean * mean, F32(0))
    sd = np.sqrt(var + F32(eps))
    d = x - mean[..., None]
    scaled = d * (F32(1.0) / sd)[..., None] if reciprocal else d / sd[..., None]
    return (scaled * gamma.astype(F32) + beta.astype(F32)).astype(F32)


@dataclass(frozen=True)
class FixedType:
    """``ap_fixed<width, int_bits, AP_RND_CONV, AP_SAT>``: codes are integers, a value is
    ``code * 2**-frac``."""

    width: int
    int_bits: int

    @property
    def frac(self) -> int:
        return self.width - self.int_bits

    def codes(self, x: np.ndarray) -> np.ndarray:
        """int64 codes of float ``x``: round to nearest, ties to even, saturate."""
        v = np.rint(np.asarray(x, dtype=np.float64) * 2.0 ** self.frac)
        lim = 2 ** (self.width - 1)
        return np.clip(v, -lim, lim - 1).astype(np.int64)

    def values(self, codes: np.ndarray) -> np.ndarray:
        return np.asarray(codes, dtype=np.float64) * 2.0 ** -self.frac

    def cpp(self) -> str:
        return f"ap_fixed<{self.width}, {self.int_bits}, AP_RND_CONV, AP_SAT>"


def accumulator_type(x: FixedType, w: FixedType, n_terms: int, bias_max_abs: float = 0.0
                     ) -> FixedType:
    """The exact accumulator of ``n_terms`` products of ``x`` and ``w`` plus a bias:
    ``frac = F_x + F_w``; integer bits ``I_x + I_w + ceil(log2 n) + 1`` (or the bias's
    plus one, when larger).

    Raises:
        ValueError: the accumulator would exceed 53 bits (fp64 no longer exact).
    """
    frac = x.frac + w.frac
    ib = x.int_bits + w.int_bits + max(0, math.ceil(math.log2(max(1, n_terms)))) + 1
    ib = max(ib, int_bits(bias_max_abs) + 1)
    if ib + frac > 53:
        raise ValueError(f"an accumulator of {n_terms} products of {x} and {w} needs "
                         f"{ib + frac} bits; the exact path is exact up to 53")
    return FixedType(ib + frac, ib)


def exact_matmul(a_codes: np.ndarray, b_codes: np.ndarray) -> np.ndarray:
    """``a @ b`` of integer codes (int64 ``(..., n)`` @ ``(n, m)``), exact as float64
    (every partial sum of integer products below 2**53; the caller's types ensure it)."""
    return np.asarray(a_codes, np.float64) @ np.asarray(b_codes, np.float64)


@dataclass
class ExactLinear:
    """One linear layer of the exact path: ``y = x @ W.T + b`` with ``x`` rounded to
    ``x_type``, ``W`` codes in ``w_type``, ``b`` codes on the accumulator grid."""

    name: str
    x_type: FixedType
    w_type: FixedType
    acc_type: FixedType
    w_codes: np.ndarray       # int64 (M, N)
    b_codes: np.ndarray       # int64 (M,)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Exact accumulator values (float64 ``(T, M)``) of float inputs ``x`` ``(T, N)``."""
        acc = exact_matmul(self.x_type.codes(x), self.w_codes.T) + self.b_codes
        return acc * 2.0 ** -self.acc_type.frac

    @staticmethod
    def of(name: str, module: nn.Module, width: int, x_int_bits: int) -> ExactLinear:
        w = module.weight.detach().double().numpy()
        b = (module.bias.detach().double().numpy() if module.bias is not None
             else np.zeros(w.shape[0]))
        x_t = FixedType(width, x_int_bits)
        w_t = FixedType(width, int_bits(float(np.abs(w).max())))
        acc = accumulator_type(x_t, w_t, w.shape[1], float(np.abs(b).max(initial=0.0)))
        return ExactLinear(name, x_t, w_t, acc, w_t.codes(w),
                           FixedType(acc.width, acc.int_bits).codes(b))


@dataclass
class ExactEncoder:
    """A BERT-style encoder classifier in the exact arithmetic (module note above), built
    by :func:`exact_model` from a ``transformers`` model, a calibration and a precision."""

    precision: str
    linears: dict[str, ExactLinear]
    attn_types: dict[str, FixedType]      # "<layer prefix>.q|k|v|probs"
    tensors: dict[str, np.ndarray]        # embeddings, layer-norm gamma/beta (float32)
    layers: int
    heads: int
    eps: float
    prefix: str = "bert"
    nonlinear: str = "fp32"               # the design's non-linear units: fp32 or fx16

    @property
    def fx16_units(self) -> bool:
        return self.nonlinear == "fx16"

    def _ln(self, name: str, x: np.ndarray) -> np.ndarray:
        return layer_norm_f32(x, self.tensors[f"{name}.weight"], self.tensors[f"{name}.bias"],
                              self.eps, reciprocal=self.fx16_units)

    def _softmax(self, s: np.ndarray) -> np.ndarray:
        return softmax_fx16(s) if self.fx16_units else softmax_f32(s)

    def _gelu(self, x: np.ndarray) -> np.ndarray:
        return gelu_fx16(x) if self.fx16_units else gelu_f32(x)

    def _tanh(self, x: np.ndarray) -> np.ndarray:
        return tanh_fx16(x) if self.fx16_units else tanh_f32(x)

    def attention_name(self, i: int) -> str:
        return f"{self.prefix}.encoder.layer.{i}.attention.self"

    def layer(self, i: int, h: np.ndarray) -> np.ndarray:
        """Encoder layer ``i`` on float32 hidden states ``(L, H)`` of one sentence."""
        p = f"{self.prefix}.encoder.layer.{i}"
        a = self.attention_name(i)
        L, H = h.shape
        dh = H // self.heads
        qkv = {}
        for which, role in (("q", "query"), ("k", "key"), ("v", "value")):
            t = self.attn_types[f"{a}.{which}"]
            qkv[which] = t.codes(self.linears[f"{a}.{role}"](h)).reshape(L, self.heads, dh
                                                                          ).transpose(1, 0, 2)
        qt, kt, vt = (self.attn_types[f"{a}.{w}"] for w in ("q", "k", "v"))
        scores = (exact_matmul(qkv["q"], qkv["k"].transpose(0, 2, 1))
                  * 2.0 ** -(qt.frac + kt.frac)).astype(F32) * F32(dh ** -0.5)
        pt = self.attn_types[f"{a}.probs"]
        probs = pt.codes(self._softmax(scores))                        # (heads, L, L)
        ctx = exact_matmul(probs, qkv["v"]) * 2.0 ** -(pt.frac + vt.frac)   # (heads, L, dh)
        ctx = ctx.transpose(1, 0, 2).reshape(L, H)
        out = self.linears[f"{p}.attention.output.dense"](ctx).astype(F32)
        h1 = self._ln(f"{p}.attention.output.LayerNorm", out + h)
        mid = self._gelu(self.linears[f"{p}.intermediate.dense"](h1).astype(F32))
        out2 = self.linears[f"{p}.output.dense"](mid).astype(F32)
        return self._ln(f"{p}.output.LayerNorm", out2 + h1)

    def embed(self, ids: np.ndarray) -> np.ndarray:
        e = f"{self.prefix}.embeddings"
        t = self.tensors
        x = (t[f"{e}.word_embeddings.weight"][ids] + t[f"{e}.token_type_embeddings.weight"][0]
             ) + t[f"{e}.position_embeddings.weight"][: len(ids)]
        return self._ln(f"{e}.LayerNorm", x)

    def logits(self, ids: np.ndarray, layers: int | None = None) -> np.ndarray:
        """float32 logits ``(classes,)`` of one sentence's token ids (int ``(L,)``, no
        padding); ``layers`` limits the encoder layers run (for tests)."""
        h = self.embed(np.asarray(ids, dtype=np.int64))
        for i in range(self.layers if layers is None else layers):
            h = self.layer(i, h)
        pooled = self._tanh(self.linears[f"{self.prefix}.pooler.dense"](h[:1]).astype(F32))
        return self.linears["classifier"](pooled).astype(F32)[0]


def exact_model(model: nn.Module, precision: str, calibration: Calibration,
                nonlinear: str = "fp32") -> ExactEncoder:
    """The exact-path twin of a BERT-style ``transformers`` classifier at ``fx16``/``fx8``,
    with the design's non-linear units (``nonlinear``: ``fp32``, the binary32 functions, or
    ``fx16``, the table units :func:`exp_fx16`, :func:`gelu_fx16`, :func:`tanh_fx16`,
    :func:`softmax_fx16` and the layer norm's per-row reciprocal).

    Weights take ``I`` from their own ``max_abs`` and activations from ``calibration``, as
    :func:`fixed_point` does; weights are read once (the model is not changed).

    Raises:
        ValueError: fp32 or unknown precision; a model that is not BERT-style; an unknown
            ``nonlinear``.
    """
    if nonlinear not in ("fp32", "fx16"):
        raise ValueError(f"non-linear units {nonlinear!r}: fp32 or fx16")
    width = width_of(precision)
    if width is None:
        raise ValueError("the exact path is for fixed-point precisions (fx16, fx8)")
    base = getattr(model, "base_model_prefix", "bert")
    if not hasattr(model, base) or not hasattr(model, "classifier"):
        raise ValueError("the exact path supports BERT-style encoder classifiers")
    bits = calibration.int_bits()
    linears = {name: ExactLinear.of(name, m, width, bits[f"{name}.input"])
               for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    attn = {f"{a}.{w}": FixedType(width, bits[f"{a}.{w}"])
            for a, _ in _attention_modules(model) for w in ("q", "k", "v", "probs")}
    tensors = {k: v.detach().float().numpy().copy() for k, v in model.state_dict().items()
               if "embeddings" in k or "LayerNorm" in k}
    cfg = model.config
    return ExactEncoder(precision, linears, attn, tensors, cfg.num_hidden_layers,
                        cfg.num_attention_heads, float(cfg.layer_norm_eps), base, nonlinear)
