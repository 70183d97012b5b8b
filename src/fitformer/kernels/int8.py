"""The int8 HP CPU layer: int8 weights, int8 activations quantised per token, int32 sums.

:class:`HPLinearInt8` runs ``y = sx[t] * sw[o] * (xq @ wq.T)[t, o] + b[o]`` where

- ``wq`` (int8, in [-127, 127]) are the kept weights quantised with one symmetric scale
  per output row, ``sw[o] = max_n |w[o, n]| / 127`` (per-channel weights, as ONNX Runtime's
  and PyTorch's dynamic int8 linear layers);
- ``xq`` (int8) is the input quantised at run time with one symmetric scale per token,
  ``sx[t] = max_n |x[t, n]| / 127``, rounded to nearest even (those libraries use one
  asymmetric scale per tensor; per token keeps outliers of one token from coarsening the
  others);
- the products are summed exactly in int32.

The C++ kernel (``hp_linear_int8.cpp``, built with the fp32 kernel by
:func:`fitformer.kernels.cpu.load_kernel`) lists, per block row of ``r`` output rows, the
column quads (4 columns) in which any of its rows keeps a weight: pruned HP blocks are
skipped (level 1), kept blocks run dense in int8 (level 2 is not exploited: 4 int8
multiply-adds per instruction lane on VNNI make a dense quad cheaper than a gather). Code
paths: AVX-512 VNNI (``vpdpbusd``, Intel SDM 2023, vol. 2), AVX2 (``vpmaddwd`` on 16-bit
pairs) and generic scalar code, capped by ``FITFORMER_CPU_ISA`` like the fp32 kernel.

Without the kernel (or with gradients) :meth:`HPLinearInt8.reference` computes the same
quantised result with PyTorch integer matmuls (slow, exact).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fitformer.errors import FitformerError

#: int8 codes are symmetric in [-QMAX, QMAX] (-128 is never used).
QMAX = 127
#: Code paths of the int8 kernel (``torch.ops.fitformer.int8_path``).
INT8_PATHS = ("generic", "avx2", "avx512-vnni")


def int8_layout(weight: np.ndarray, mask: np.ndarray, r: int) -> dict:
    """The int8 kernel's layout of a masked ``(M, N)`` weight (``hp_linear_int8.cpp``).

    Returns:
        ``{"qptr" int64 [Mb + 1], "qcols" int32 [E], "w4" int32 [E r], "w2" int32 [2 E r],
        "wsum" int32 [Mb r], "wscale" float32 [M], "wq" int8 (M, N)}``: per block row the
        listed column quads, their int8 weights (4 per word; as two 16-bit pairs, bytes
        (0, 2) and (1, 3), for the AVX2 path), each row's sum of codes, the per-row scales
        and the codes themselves.
    """
    M, N = weight.shape
    Mb, Nq = -(-M // r), -(-N // 4)
    w = np.zeros((Mb * r, Nq * 4), np.float32)
    keep = np.zeros((Mb * r, Nq * 4), bool)
    w[:M, :N] = np.where(mask, weight, 0.0)
    keep[:M, :N] = mask
    amax = np.abs(w).max(axis=1)
    scale = np.where(amax > 0, amax / np.float32(QMAX), np.float32(1.0)).astype(np.float32)
    codes = np.clip(np.rint(w / scale[:, None]), -QMAX, QMAX).astype(np.int8)
    codes[~keep] = 0
    listed = keep.reshape(Mb, r, Nq, 4).any(axis=(1, 3))          # [Mb, Nq]
    j, q = np.nonzero(listed)                                     # block-row major
    blocks = np.ascontiguousarray(codes.reshape(Mb, r, Nq, 4)[j, :, q, :])   # [E, r, 4]
    pairs = blocks.astype(np.int16)
    w2 = np.stack([np.ascontiguousarray(pairs[..., [0, 2]]).view(np.int32)[..., 0],
                   np.ascontiguousarray(pairs[..., [1, 3]]).view(np.int32)[..., 0]], axis=-1)
    return {"qptr": np.concatenate([[0], np.cumsum(listed.sum(axis=1))]).astype(np.int64),
            "qcols": q.astype(np.int32), "w4": blocks.view(np.int32).reshape(-1),
            "w2": np.ascontiguousarray(w2).reshape(-1),
            "wsum": codes.astype(np.int32).sum(axis=1).astype(np.int32),
            "wscale": scale[:M].copy(), "wq": codes[:M, :N].copy()}


def quantise_tokens(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(xq int32 (T, N), sx float32 (T,))``: each token (row) of fp32 ``x`` quantised with
    its symmetric scale ``max |x[t]| / 127`` (0 for an all-zero token), rounded to nearest
    even, exactly as the kernel does."""
    amax = x.abs().amax(dim=1)
    inv = torch.where(amax > 0, torch.tensor(float(QMAX)) / amax, torch.zeros(()))
    xq = torch.round(torch.clamp(x * inv[:, None], -QMAX, QMAX)).to(torch.int32)
    return xq, amax / QMAX


class HPLinearInt8(nn.Module):
    """A pruned ``nn.Linear`` run in int8 by the HP CPU kernel (inference; module docstring).

    Args:
        weight: ``(M, N)`` float tensor; mask: ``(M, N)`` bool (True = kept).
        bias: ``(M,)`` or ``None`` (kept in fp32). r: rows per block (design.md §3).

    Input ``(..., N)`` float32, output ``(..., M)`` float32.

    Raises:
        FitformerError: shapes of weight, mask and bias disagree, or an input that is not
            float32 or does not end in ``N`` features.
    """

    def __init__(self, weight: torch.Tensor, mask: torch.Tensor,
                 bias: torch.Tensor | None = None, *, r: int = 16):
        from fitformer.kernels.cpu import check_layer_args

        super().__init__()
        check_layer_args("HPLinearInt8", weight, mask, bias, r)
        self.out_features, self.in_features = (int(s) for s in weight.shape)
        self.r = r
        lay = int8_layout(weight.detach().float().cpu().numpy(),
                          mask.detach().cpu().numpy().astype(bool), r)
        for name in ("qptr", "qcols", "w4", "w2", "wsum", "wscale", "wq"):
            self.register_buffer(name, torch.from_numpy(lay[name]))
        self.register_buffer("bias", None if bias is None
                             else bias.detach().float().cpu().clone())
        self.nnz = int(mask.sum())

    @classmethod
    def from_linear(cls, linear: nn.Linear, mask: torch.Tensor | None = None, *,
                    r: int = 16) -> HPLinearInt8:
        """The int8 HP layer of ``linear`` with ``mask`` (default: its non-zero weights)."""
        w = linear.weight.detach()
        return cls(w, (w != 0) if mask is None else mask.to(torch.bool), linear.bias, r=r)

    @property
    def backend(self) -> str:
        """``"hp-cpu-int8"`` with the kernel, else ``"reference: <reason>"``."""
        from fitformer.kernels.cpu import load_kernel

        reason = load_kernel()
        return "hp-cpu-int8" if reason is None else f"reference: {reason}"

    def reference(self, x2: torch.Tensor) -> torch.Tensor:
        """The kernel's result for ``(T, N)`` fp32 ``x2`` in PyTorch: exact int64 sums of
        the same codes, then the same float32 scaling (slow; the fallback and the tests'
        reference)."""
        xq, sx = quantise_tokens(x2)
        acc = (xq.to(torch.int64) @ self.wq.to(torch.int64).T).to(torch.float32)
        y = acc * self.wscale[None, :] * sx[:, None]
        return y if self.bias is None else y + self.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from fitformer.kernels.cpu import ISAS, isa_path, load_kernel

        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise FitformerError(f"HPLinearInt8: input of shape {tuple(x.shape)} does not end "
                                 f"in {self.in_features} features.")
        if x.dtype != torch.float32:
            raise FitformerError(f"HPLinearInt8: input dtype {x.dtype}; the int8 layer takes "
                                 "float32 activations (it quantises them itself).")
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features).contiguous()
        if x.device.type != "cpu" or load_kernel() is not None:
            y = self.reference(x2)
        else:
            y = torch.ops.fitformer.hp_linear_int8(
                x2, self.qptr, self.r, self.qcols, self.w4, self.w2, self.wsum,
                self.wscale, self.bias, self.out_features, ISAS.index(isa_path()))
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"density={self.nnz / max(1, self.out_features * self.in_features):.3f}, "
                f"r={self.r}, int8")


def int8_path() -> str | None:
    """The int8 code path that runs now (:data:`INT8_PATHS`), ``None`` without the kernel."""
    from fitformer.kernels.cpu import ISAS, isa_path, load_kernel

    if load_kernel() is not None:
        return None
    return INT8_PATHS[int(torch.ops.fitformer.int8_path(ISAS.index(isa_path())))]
