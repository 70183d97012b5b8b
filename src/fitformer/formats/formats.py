"""Sparse storage formats of a masked weight matrix (design.md §5).

Every format encodes ``(values, mask)`` — a float matrix ``(M, N)`` and a boolean mask of
the same shape — decodes it back and reports its size in bits for a value width ``w``.

- Structure-free formats (COO, CSR, CSC) decode the mask exactly, kept zeros
  included.
- Dense stores every position and decodes to the all-kept mask.
- Structured formats (BCSR, CSB, CBR, HP) store whole units (blocks, balanced banks). Given
  a mask whose structure they hold, they decode it exactly; given a *foreign* mask they pad
  with explicit zeros (counted in their size), and decode to the stored positions, a
  superset of the mask, with the same matrix values (``values * mask``).

Index widths are ``ceil(log2(range))`` (:func:`fitformer.formats.bits.index_bits`).
Shapes that blocks or banks do not divide are padded with zeros to the next multiple (as for
the patterns), and the padded units are counted.

Sources: COO, CSR, CSC, BCSR: Saad, "Iterative Methods for Sparse Linear Systems" (2003),
§3.4; CSB (compressed sparse banks): Cao et al., "Efficient and Effective Sparse LSTM on
FPGA with Bank-Balanced Sparsity", FPGA 2019; CBR (one index per kept block row): the
block-row format of Qi et al., GLSVLSI 2021, as reconstructed here; HP: design.md §5.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from fitformer.formats.bits import SizeBits, index_bits


def _check(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray(values)
    mask = np.asarray(mask, dtype=bool)
    if values.ndim != 2 or values.shape != mask.shape:
        raise ValueError(f"values {values.shape} and mask {mask.shape} must be equal 2-D shapes")
    return np.where(mask, values, 0).astype(values.dtype, copy=False), mask


def _pad(x: np.ndarray, rows: int, cols: int) -> np.ndarray:
    M, N = x.shape
    return np.pad(x, ((0, (-M) % rows), (0, (-N) % cols)))


def _first_k(keys: np.ndarray, k: int, axis: int) -> np.ndarray:
    """Indices of the ``k`` smallest ``keys`` along ``axis`` (stable), sorted ascending."""
    order = np.argsort(keys, axis=axis, kind="stable")
    chosen = np.take(order, np.arange(k), axis=axis)
    return np.sort(chosen, axis=axis)


@dataclass
class Encoded:
    """An encoded matrix: its format, original shape, and the format's arrays."""

    format: str
    shape: tuple[int, int]
    arrays: dict[str, np.ndarray]
    params: dict


class Format(ABC):
    """A storage format (see the module docstring)."""

    name: str = ""

    @abstractmethod
    def encode(self, values: np.ndarray, mask: np.ndarray) -> Encoded:
        """Encode ``values`` (float ``(M, N)``) under ``mask`` (bool ``(M, N)``).

        Raises:
            ValueError: shapes differ or are not 2-D.
        """

    @abstractmethod
    def decode(self, enc: Encoded) -> tuple[np.ndarray, np.ndarray]:
        """``(values, mask)`` back; ``values`` is zero outside the mask."""

    @abstractmethod
    def size(self, enc: Encoded, value_bits: int, aligned: bool = False) -> SizeBits:
        """Bits of ``enc`` with values of ``value_bits`` bits."""


class Dense(Format):
    """Every element stored: ``M * N * w`` bits. Every position is stored, so it decodes
    to the all-kept mask (the structured-format rule) with pruned weights as zeros."""

    name = "dense"

    def encode(self, values, mask):
        v, _ = _check(values, mask)
        return Encoded(self.name, v.shape, {"values": v}, {})

    def decode(self, enc):
        v = enc.arrays["values"]
        return v.copy(), np.ones(v.shape, bool)

    def size(self, enc, value_bits, aligned=False):
        M, N = enc.shape
        return SizeBits(M * N * value_bits, 0, 0)


class COO(Format):
    """Coordinate list: a (row, column, value) triple per kept weight."""

    name = "coo"

    def encode(self, values, mask):
        v, m = _check(values, mask)
        rows, cols = np.nonzero(m)
        return Encoded(self.name, v.shape, {"rows": rows, "cols": cols,
                                             "values": v[rows, cols]}, {})

    def decode(self, enc):
        M, N = enc.shape
        a = enc.arrays
        v = np.zeros((M, N), a["values"].dtype)
        m = np.zeros((M, N), bool)
        v[a["rows"], a["cols"]] = a["values"]
        m[a["rows"], a["cols"]] = True
        return v, m

    def size(self, enc, value_bits, aligned=False):
        M, N = enc.shape
        nnz = len(enc.arrays["values"])
        return SizeBits(nnz * value_bits,
                        nnz * (index_bits(M, aligned) + index_bits(N, aligned)), 0)


class CSR(Format):
    """Compressed sparse rows: column index per kept weight, ``M + 1`` row pointers."""

    name = "csr"
    transpose = False

    def encode(self, values, mask):
        v, m = _check(values, mask)
        if self.transpose:
            v, m = v.T, m.T
        rows, cols = np.nonzero(m)
        ptr = np.zeros(m.shape[0] + 1, np.int64)
        np.cumsum(m.sum(axis=1), out=ptr[1:])
        shape = (v.shape[1], v.shape[0]) if self.transpose else v.shape
        return Encoded(self.name, shape, {"ptr": ptr, "idx": cols, "values": v[rows, cols]}, {})

    def decode(self, enc):
        a = enc.arrays
        M, N = (enc.shape[1], enc.shape[0]) if self.transpose else enc.shape
        rows = np.repeat(np.arange(M), np.diff(a["ptr"]))
        v = np.zeros((M, N), a["values"].dtype)
        m = np.zeros((M, N), bool)
        v[rows, a["idx"]] = a["values"]
        m[rows, a["idx"]] = True
        return (v.T.copy(), m.T.copy()) if self.transpose else (v, m)

    def size(self, enc, value_bits, aligned=False):
        M, N = (enc.shape[1], enc.shape[0]) if self.transpose else enc.shape
        nnz = len(enc.arrays["values"])
        return SizeBits(nnz * value_bits, nnz * index_bits(N, aligned),
                        (M + 1) * index_bits(nnz + 1, aligned))


class CSC(CSR):
    """Compressed sparse columns: row index per kept weight, ``N + 1`` column pointers."""

    name = "csc"
    transpose = True


@dataclass
class BCSR(Format):
    """Block CSR with ``r x c`` blocks: every block holding a kept weight is stored whole
    (``r * c`` values, zeros included), with its block-column index; ``M / r + 1`` block-row
    pointers."""

    r: int = 16
    c: int = 16
    name = "bcsr"

    def encode(self, values, mask):
        v, m = _check(values, mask)
        M, N = v.shape
        vp, mp = _pad(v, self.r, self.c), _pad(m, self.r, self.c)
        Mb, Nb = mp.shape[0] // self.r, mp.shape[1] // self.c
        kept = mp.reshape(Mb, self.r, Nb, self.c).any(axis=(1, 3))
        brow, bcol = np.nonzero(kept)
        blocks = vp.reshape(Mb, self.r, Nb, self.c).transpose(0, 2, 1, 3)[brow, bcol]
        ptr = np.zeros(Mb + 1, np.int64)
        np.cumsum(kept.sum(axis=1), out=ptr[1:])
        return Encoded(self.name, (M, N), {"ptr": ptr, "block_cols": bcol, "blocks": blocks},
                       {"r": self.r, "c": self.c})

    def decode(self, enc):
        M, N = enc.shape
        a = enc.arrays
        Mb, Nb = math.ceil(M / self.r), math.ceil(N / self.c)
        brow = np.repeat(np.arange(Mb), np.diff(a["ptr"]))
        vb = np.zeros((Mb, Nb, self.r, self.c), a["blocks"].dtype)
        mb = np.zeros((Mb, Nb, self.r, self.c), bool)
        vb[brow, a["block_cols"]] = a["blocks"]
        mb[brow, a["block_cols"]] = True
        v = vb.transpose(0, 2, 1, 3).reshape(Mb * self.r, Nb * self.c)[:M, :N]
        m = mb.transpose(0, 2, 1, 3).reshape(Mb * self.r, Nb * self.c)[:M, :N]
        return v.copy(), m.copy()

    def size(self, enc, value_bits, aligned=False):
        M, N = enc.shape
        nb = len(enc.arrays["block_cols"])
        Mb, Nb = math.ceil(M / self.r), math.ceil(N / self.c)
        return SizeBits(nb * self.r * self.c * value_bits, nb * index_bits(Nb, aligned),
                        (Mb + 1) * index_bits(nb + 1, aligned))


def _balanced_select(mask_units: np.ndarray, k: int) -> np.ndarray:
    """In each unit (last axis), the ``k`` positions to store: kept ones first (ascending),
    then unused positions as explicit-zero padding. Returns sorted offsets."""
    width = mask_units.shape[-1]
    keys = np.where(mask_units, 0, width) + np.arange(width)
    return _first_k(keys, k, axis=-1)


@dataclass
class CSB(Format):
    """Compressed sparse banks (Cao et al. 2019): each row split into ``B`` banks of
    ``ceil(N / B)`` columns; every bank stores the same ``k`` values (the largest kept count
    of any bank; shorter banks padded with explicit zeros) and their in-bank offsets. The
    balance makes row pointers unnecessary."""

    banks: int = 4
    name = "csb"

    def encode(self, values, mask):
        v, m = _check(values, mask)
        M, N = v.shape
        width = math.ceil(N / self.banks)
        vp, mp = _pad(v, 1, width * self.banks), _pad(m, 1, width * self.banks)
        mb = mp.reshape(M, self.banks, width)
        k = int(mb.sum(axis=2).max()) if mb.size else 0
        offsets = _balanced_select(mb, k)
        vals = np.take_along_axis(vp.reshape(M, self.banks, width), offsets, axis=2)
        return Encoded(self.name, (M, N), {"values": vals, "offsets": offsets},
                       {"B": self.banks, "k": k, "bank_width": width})

    def decode(self, enc):
        M, N = enc.shape
        width = enc.params["bank_width"]
        a = enc.arrays
        v = np.zeros((M, self.banks, width), a["values"].dtype)
        m = np.zeros((M, self.banks, width), bool)
        np.put_along_axis(v, a["offsets"], a["values"], axis=2)
        np.put_along_axis(m, a["offsets"], True, axis=2)
        return (v.reshape(M, -1)[:, :N].copy(), m.reshape(M, -1)[:, :N].copy())

    def size(self, enc, value_bits, aligned=False):
        n = enc.arrays["values"].size
        width = enc.params["bank_width"]
        off = 0 if enc.params["k"] == width else index_bits(width, aligned)
        return SizeBits(n * value_bits, n * off, 0)


def _block_row_select(mask_padded: np.ndarray, r: int, c: int) -> tuple[np.ndarray, int]:
    """Per stripe, the block rows to store (kept ones first, padded with unused ones) and
    ``K1`` (the largest number of kept blocks in a stripe). Returns ``(block_rows[S, K1],
    K1)``."""
    Mp, Np = mask_padded.shape
    Mb, S = Mp // r, Np // c
    kept = mask_padded.reshape(Mb, r, S, c).any(axis=(1, 3))      # (Mb, S)
    K1 = int(kept.sum(axis=0).max()) if kept.size else 0
    return _balanced_select(kept.T, K1), K1                       # (S, K1)


def _gather_segments(x: np.ndarray, block_rows: np.ndarray, r: int, c: int) -> np.ndarray:
    """Rows of the chosen blocks, per stripe: ``(S, K1 * r, c)``."""
    Mp, Np = x.shape
    S = Np // c
    stripes = x.reshape(Mp, S, c).transpose(1, 0, 2)               # (S, Mp, c)
    rows = (block_rows[:, :, None] * r + np.arange(r)).reshape(S, -1)  # (S, K1*r)
    return np.take_along_axis(stripes, rows[:, :, None], axis=1)


def _scatter_segments(seg: np.ndarray, block_rows: np.ndarray, r: int, c: int,
                      shape_padded: tuple[int, int]) -> np.ndarray:
    Mp, Np = shape_padded
    S = Np // c
    out = np.zeros((S, Mp, c), seg.dtype)
    rows = (block_rows[:, :, None] * r + np.arange(r)).reshape(S, -1)
    np.put_along_axis(out, rows[:, :, None], seg, axis=1)
    return out.transpose(1, 0, 2).reshape(Mp, Np)


@dataclass
class CBR(Format):
    """Column-balanced block rows: per stripe of ``c`` columns, ``K1`` blocks of ``r x c``
    stored whole, each with one block-row index (no pointers: every stripe has ``K1``)."""

    r: int = 16
    c: int = 16
    name = "cbr"

    def encode(self, values, mask):
        v, m = _check(values, mask)
        vp, mp = _pad(v, self.r, self.c), _pad(m, self.r, self.c)
        block_rows, K1 = _block_row_select(mp, self.r, self.c)
        return Encoded(self.name, v.shape,
                       {"block_rows": block_rows,
                        "values": _gather_segments(vp, block_rows, self.r, self.c)},
                       {"r": self.r, "c": self.c, "K1": K1, "padded": vp.shape})

    def decode(self, enc):
        M, N = enc.shape
        a = enc.arrays
        shape = tuple(enc.params["padded"])
        v = _scatter_segments(a["values"], a["block_rows"], self.r, self.c, shape)
        m = _scatter_segments(np.ones_like(a["values"], bool), a["block_rows"], self.r,
                              self.c, shape)
        return v[:M, :N].copy(), m[:M, :N].copy()

    def size(self, enc, value_bits, aligned=False):
        Mp = enc.params["padded"][0]
        Mb = Mp // self.r
        n_blocks = enc.arrays["block_rows"].size
        idx = 0 if enc.params["K1"] == Mb else index_bits(Mb, aligned)
        return SizeBits(enc.arrays["values"].size * value_bits, n_blocks * idx, 0)


@dataclass
class HPFormat(Format):
    """The HP format (design.md §5): per stripe ``K1`` block-row indices; per kept row
    segment and bank, ``k`` values with in-bank offsets of ``ceil(log2(c / B))`` bits (no
    offsets when ``k = c / B``, no block-row indices when ``K1 = M / r``). The balance of
    both levels removes every pointer.

    In memory (unpacked): ``block_rows[S, K1]``, ``values[S, K1 * r, B, k]``,
    ``offsets[S, K1 * r, B, k]``; bank ``b`` of every row segment is contiguous in
    ``values[:, :, b]``, so a PE reads bank ``b`` of all its lanes in one cycle.
    """

    r: int = 16
    c: int = 16
    banks: int = 4
    name = "hp"

    def __post_init__(self):
        if self.c % self.banks:
            raise ValueError(f"banks B = {self.banks} must divide c = {self.c}")

    @property
    def bank_width(self) -> int:
        return self.c // self.banks

    def encode(self, values, mask):
        v, m = _check(values, mask)
        vp, mp = _pad(v, self.r, self.c), _pad(m, self.r, self.c)
        block_rows, K1 = _block_row_select(mp, self.r, self.c)
        S = vp.shape[1] // self.c
        mseg = _gather_segments(mp, block_rows, self.r, self.c).reshape(
            S, K1 * self.r, self.banks, self.bank_width)
        vseg = _gather_segments(vp, block_rows, self.r, self.c).reshape(mseg.shape)
        k = int(mseg.sum(axis=3).max()) if mseg.size else 0
        offsets = _balanced_select(mseg, k)
        vals = np.take_along_axis(vseg, offsets, axis=3)
        return Encoded(self.name, v.shape,
                       {"block_rows": block_rows, "values": vals,
                        "offsets": offsets.astype(np.uint8 if self.bank_width <= 256
                                                  else np.int64)},
                       {"r": self.r, "c": self.c, "B": self.banks, "K1": K1, "k": k,
                        "padded": vp.shape})

    def decode(self, enc):
        M, N = enc.shape
        a = enc.arrays
        S, rows, B, k = a["values"].shape
        offsets = a["offsets"].astype(np.int64)
        vseg = np.zeros((S, rows, B, self.bank_width), a["values"].dtype)
        mseg = np.zeros((S, rows, B, self.bank_width), bool)
        np.put_along_axis(vseg, offsets, a["values"], axis=3)
        np.put_along_axis(mseg, offsets, True, axis=3)
        shape = tuple(enc.params["padded"])
        v = _scatter_segments(vseg.reshape(S, rows, self.c), a["block_rows"], self.r,
                              self.c, shape)
        m = _scatter_segments(mseg.reshape(S, rows, self.c), a["block_rows"], self.r,
                              self.c, shape)
        return v[:M, :N].copy(), m[:M, :N].copy()

    def size(self, enc, value_bits, aligned=False):
        Mp = enc.params["padded"][0]
        Mb = Mp // self.r
        n_vals = enc.arrays["values"].size
        off = 0 if enc.params["k"] == self.bank_width else index_bits(self.bank_width, aligned)
        idx = 0 if enc.params["K1"] == Mb else index_bits(Mb, aligned)
        return SizeBits(n_vals * value_bits, n_vals * off + enc.arrays["block_rows"].size * idx,
                        0)


FORMATS = ("dense", "coo", "csr", "csc", "bcsr", "csb", "cbr", "hp")


def make_format(name: str, *, block: tuple[int, int] = (16, 16), banks: int = 4) -> Format:
    """The format called ``name`` (one of :data:`FORMATS`) with the given block and banks.

    Raises:
        ValueError: unknown name.
    """
    r, c = block
    table = {"dense": Dense, "coo": COO, "csr": CSR, "csc": CSC,
             "bcsr": lambda: BCSR(r, c), "csb": lambda: CSB(banks),
             "cbr": lambda: CBR(r, c), "hp": lambda: HPFormat(r, c, banks)}
    if name not in table:
        raise ValueError(f"unknown format {name!r}; choose from {', '.join(FORMATS)}")
    return table[name]()
