"""Information-theoretic lower bound on the size of a masked matrix (design.md §5).

The bound is the value bits of the kept weights plus ``log2`` of the number of masks the
pattern allows at that density: any encoding that distinguishes all those masks needs at
least that many bits on average.

============== =========================================================================
pattern        number of masks (``C`` = binomial coefficient)
============== =========================================================================
unstructured   ``C(M * N, nnz)``
block          ``C(Mb * Nb, nblocks)``
cbb            ``C(Mb, K1) ** S``
bank           ``C(N / B, k) ** (M * B)``
nm             ``C(m, n) ** (M * N / m)``
hp             ``C(Mb, K1) ** S * C(c / B, k) ** (S * K1 * r * B)``
============== =========================================================================

with ``Mb = M / r`` and ``S = Nb = N / c`` (rounded up: the padded shape).
"""

from __future__ import annotations

import math

import numpy as np

from fitformer.formats.bits import log2_binomial


def mask_log2_count(pattern: str, shape: tuple[int, int], counts: dict, *,
                    r: int = 16, c: int = 16, banks: int = 4, m: int = 4) -> float:
    """``log2`` of the number of masks ``pattern`` allows with the given counts.

    Args:
        pattern: pattern name (``fitformer.sparsity.patterns.PATTERNS``).
        shape: ``(M, N)``.
        counts: the pattern's counts (``{"K1", "k"}`` for hp, ``{"kept"}`` for unstructured,
            ``{"blocks"}``, ``{"K1"}``, ``{"k"}``, ``{"n"}``).

    Raises:
        ValueError: unknown pattern.
    """
    M, N = shape
    Mb, S = math.ceil(M / r), math.ceil(N / c)
    if pattern == "unstructured":
        return log2_binomial(M * N, counts["kept"])
    if pattern == "block":
        return log2_binomial(Mb * S, counts["blocks"])
    if pattern == "cbb":
        return S * log2_binomial(Mb, counts["K1"])
    if pattern == "bank":
        width = math.ceil(N / banks)
        return M * banks * log2_binomial(width, counts["k"])
    if pattern == "nm":
        return M * math.ceil(N / m) * log2_binomial(m, counts["n"])
    if pattern == "hp":
        K1, k = counts["K1"], counts["k"]
        return S * log2_binomial(Mb, K1) + S * K1 * r * banks * log2_binomial(c // banks, k)
    raise ValueError(f"no bound for pattern {pattern!r}")


def lower_bound_bits(mask: np.ndarray, value_bits: int, pattern: str, counts: dict,
                     **params) -> float:
    """Value bits of the kept weights plus ``log2`` of the number of allowed masks."""
    nnz = int(np.count_nonzero(mask))
    return nnz * value_bits + mask_log2_count(pattern, tuple(mask.shape), counts, **params)
