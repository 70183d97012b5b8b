"""Bit accounting shared by every storage format (design.md §5).

An index that takes ``n`` distinct values needs ``ceil(log2(n))`` bits (0 when ``n <= 1``);
with ``aligned=True`` every index width is rounded up to 8, 16 or 32 bits, as a byte-
addressed implementation would store it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def index_bits(n_values: int, aligned: bool = False) -> int:
    """Bits of an unsigned index over ``n_values`` distinct values.

    Raises:
        ValueError: ``n_values`` is negative.
    """
    if n_values < 0:
        raise ValueError(f"n_values must be >= 0, got {n_values}")
    bits = 0 if n_values <= 1 else math.ceil(math.log2(n_values))
    if aligned and bits:
        for width in (8, 16, 32, 64):
            if bits <= width:
                return width
    return bits


def log2_binomial(n: int, k: int) -> float:
    """``log2 C(n, k)`` via ``lgamma`` (exact enough for bit counts; 0 for k in {0, n})."""
    if k < 0 or k > n:
        raise ValueError(f"C({n}, {k}) is not defined")
    return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / math.log(2)


@dataclass(frozen=True)
class SizeBits:
    """Size of an encoded matrix, in bits, split by role.

    Attributes:
        value_bits: stored values (kept weights and any explicit zeros), ``w`` bits each.
        index_bits: column / row / offset / block indices.
        pointer_bits: row or block-row pointers (offsets into the index arrays).
    """

    value_bits: int
    index_bits: int
    pointer_bits: int

    @property
    def total_bits(self) -> int:
        return self.value_bits + self.index_bits + self.pointer_bits

    def as_dict(self) -> dict:
        return {"total_bits": self.total_bits, "value_bits": self.value_bits,
                "index_bits": self.index_bits, "pointer_bits": self.pointer_bits}
