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
