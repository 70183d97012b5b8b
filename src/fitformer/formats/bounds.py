"""Information-theoretic lower bound on the size of a masked matrix (design.md §5).

The bound is the value bits of the kept weights plus ``log2`` of the number of masks the
pattern allows at that density: any encoding that distinguishes all those masks needs at
least that many bits on average. Each pattern declares that number
(:meth:`fitformer.sparsity.patterns.Pattern.mask_count_factors`, tabulated in
docs/design.md §5); this module reads it from the pattern registry.
"""

from __future__ import annotations

import numpy as np

from fitformer.formats.bits import log2_binomial


def mask_log2_count(pattern: str, shape: tuple[int, int], counts: dict, *,
                    r: int = 16, c: int = 16, banks: int = 4, m: int = 4) -> float:
    """``log2`` of the number of masks ``pattern`` allows with the given counts.

    Args:
        pattern: a registered pattern name
            (:func:`fitformer.sparsity.patterns.pattern_names`).
        shape: ``(M, N)``.
        counts: the pattern's counts (``{"K1", "k"}`` for hp, ``{"kept"}`` for unstructured,
            ``{"blocks"}``, ``{"K1"}``, ``{"k"}``, ``{"n"}``).
        r, c, banks, m: the pattern's parameters (block ``r x c``, ``B``, N:M's ``m``).

    Raises:
        FitformerError: unknown pattern (the message lists the registered ones) or invalid
            parameters.
    """
    from fitformer.sparsity.patterns import make_pattern

    pat = make_pattern(pattern, block=(r, c), banks=banks, nm_m=m)
    return sum(times * log2_binomial(n, k)
               for n, k, times in pat.mask_count_factors(tuple(shape), counts))


def lower_bound_bits(mask: np.ndarray, value_bits: int, pattern: str, counts: dict,
                     **params) -> float:
    """Value bits of the kept weights plus ``log2`` of the number of allowed masks."""
    nnz = int(np.count_nonzero(mask))
    return nnz * value_bits + mask_log2_count(pattern, tuple(mask.shape), counts, **params)
