"""Sparsity schedules.

The cubic schedule of Zhu & Gupta ("To prune, or not to prune", 2017, eq. 1): over the
pruning window, a level's density moves from its initial value ``d_i`` to its final value
``d_f`` as ``d(t) = d_f + (d_i - d_f) * (1 - t) ** 3`` for progress ``t`` in [0, 1], pruning
fast at first, when many redundant weights remain, and slowly near the end.

Multi-level patterns (HP) run their levels one after another on the same curve
(design.md §3): level ``j`` of ``L`` uses the ``j``-th equal slice of the window.
"""

from __future__ import annotations


def cubic(d_initial: float, d_final: float, t: float) -> float:
    """Density at progress ``t`` (clipped to [0, 1]) on Zhu & Gupta's cubic curve."""
    t = min(1.0, max(0.0, t))
    return d_final + (d_initial - d_final) * (1.0 - t) ** 3


def level_densities(initial: tuple[float, ...], final: tuple[float, ...], t: float
                    ) -> tuple[float, ...]:
    """Per-level densities at window progress ``t``: level ``j`` of ``L`` moves during
    ``[j / L, (j + 1) / L]`` of the window, and is at its initial (before) or final (after)
    value outside its slice."""
    n = len(final)
    return tuple(cubic(di, df, t * n - j) for j, (di, df) in enumerate(zip(initial, final,
                                                                            strict=True)))
