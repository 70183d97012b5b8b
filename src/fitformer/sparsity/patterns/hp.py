"""Hierarchical pruning (HP, design.md §3): column-balanced blocks, then bank-balanced
weights inside every kept block."""

from __future__ import annotations

import math
from dataclasses import dataclass

from fitformer.errors import FitformerError
from fitformer.sparsity.patterns.base import (
    _check_density,
    _finish,
    _floor,
    _group_counts,
    _pruned_outside,
    _real_widths,
    _topk_per_group,
)
from fitformer.sparsity.patterns.block import _Blocked, _expand_blocks
from fitformer.sparsity.patterns.cbb import _cbb_block_mask, _level1_count
from fitformer.sparsity.patterns.registry import register

LEVEL2_GRID_NOTE = "d2 must be a multiple of B / c (k weights of c / B per bank)"


@register
@dataclass
class Hierarchical(_Blocked):
    """HP (design.md §3): level 1 = column-balanced blocks (``K1`` per stripe), level 2 =
    bank-balanced weights inside kept blocks (``k`` per bank of ``c / B`` in every kept row
    segment). ``d = d1 * d2`` with ``d1 = K1 * r / M`` and ``d2 = k * B / c``. Counts use
    the real shape (package docstring): ``K1 = floor(d1 * M / r)``, and a partial bank of
    ``w`` real columns keeps ``floor(d2 * w)``, so at most ``floor(d * M * N)`` real weights
    are kept.

    Reconstructed from Qi et al. (ISQED 2021; GLSVLSI 2021) and Cao et al. (FPGA 2019).

    Attributes:
        banks: ``B``; must divide ``c``.
        level2_density: the split ``d2``, or ``None`` for the default: the smallest grid
            value at least ``max(0.5, d)``.
    """

    banks: int = 4
    level2_density: float | None = None
    name = "hp"
    help = ("hierarchical: every stripe keeps K1 blocks, every bank of c / B columns of a "
            "kept block row keeps k weights")
    n_levels = 2
    balanced = True
    stripe_balanced = True

    def __post_init__(self):
        super().__post_init__()
        if self.banks < 1:
            raise FitformerError(f"--banks {self.banks} must be positive (e.g. --banks 4).")
        if self.c % self.banks:
            raise FitformerError(
                f"--banks {self.banks} must divide the block width c = {self.c} "
                f"(e.g. --banks 4 with --block 16x16)."
            )
        if self.level2_density is not None:
            self._check_d2(self.level2_density)

    @classmethod
    def from_options(cls, *, block=(16, 16), banks=4, level2_density=None, nm_m=4):
        return cls(*block, banks=banks, level2_density=level2_density)

    @property
    def bank_width(self) -> int:
        return self.c // self.banks

    @property
    def level2_grid(self) -> tuple[float, ...]:
        """Reachable ``d2`` values: ``k / (c / B)`` for ``k = 1 .. c / B``."""
        w = self.bank_width
        return tuple(k / w for k in range(1, w + 1))

    def _check_d2(self, d2: float) -> None:
        if not any(abs(d2 - g) < 1e-9 for g in self.level2_grid):
            raise FitformerError(
                f"--level2-density {d2} is not on the grid {list(self.level2_grid)} "
                f"({LEVEL2_GRID_NOTE}, c={self.c}, B={self.banks})."
            )

    def params(self):
        return {"r": self.r, "c": self.c, "B": self.banks,
                "level2_density": self.level2_density}

    def default_d2(self, density: float) -> float:
        """Smallest grid ``d2`` that is at least ``max(0.5, density)`` (design.md §3)."""
        target = max(0.5, density)
        for g in self.level2_grid:
            if g + 1e-9 >= target:
                return g
        return 1.0

    def split(self, sparsity: float) -> tuple[float, float]:
        """Requested ``(d1, d2)`` for a requested sparsity (``d1 = d / d2``).

        Raises:
            FitformerError: an explicit ``d2`` below the requested density.
        """
        d = _check_density(sparsity)
        d2 = self.level2_density if self.level2_density is not None else self.default_d2(d)
        if d2 + 1e-9 < d:
            raise FitformerError(
                f"--level2-density {d2} cannot reach density {d:.3g} (sparsity {sparsity}): "
                f"d = d1 * d2 needs d2 >= d; use a larger --level2-density."
            )
        return (min(1.0, d / d2), d2)

    def splits(self, sparsity: float) -> tuple[tuple[float, float], ...]:
        """Every requested split ``(d1, d2)`` of a requested sparsity: ``d2`` on
        :attr:`level2_grid` with ``d2 >= d`` and ``d1 = d / d2`` (so ``d1 * d2 = d`` and
        ``d1 <= 1``), in increasing ``d2`` (decreasing ``d1``). The default rule
        (:meth:`default_d2`) picks one of them; a per-layer split chooses among them
        (:mod:`fitformer.sparsity.sensitivity`).

        Raises:
            FitformerError: the sparsity is outside [0, 1].
        """
        d = _check_density(sparsity)
        return tuple((min(1.0, d / g), g) for g in self.level2_grid if g + 1e-9 >= d)

    def density_step(self, shape: tuple[int, int], levels: tuple[float, float]) -> float:
        """One grid step of the achieved density at the split ``levels`` of an ``(M, N)``
        weight: one more block per stripe, ``d2 * r / M`` (design.md §3). ``K1`` rounds
        ``d1 * M / r`` down, so the achieved density is in ``(d - step, d]`` when ``r``
        divides ``M`` and ``c`` divides ``N`` (a partial block or bank keeps fewer real
        weights: never more than ``d``, possibly less than ``d - step``)."""
        return levels[1] * self.r / shape[0]

    def plan(self, shape, sparsity):
        return self.split(sparsity)

    def counts(self, shape, levels):
        d1, d2 = levels
        return {"K1": _level1_count(d1, shape[0], self.r), "k": _floor(d2 * self.bank_width)}

    def mask_count_factors(self, shape, counts):
        """``C(Mb, K1) ** S * C(c / B, k) ** (S * K1 * r * B)`` with ``Mb = ceil(M / r)``,
        ``S = ceil(N / c)``."""
        Mb, S = math.ceil(shape[0] / self.r), math.ceil(shape[1] / self.c)
        K1, k = counts["K1"], counts["k"]
        return ((Mb, K1, S), (self.bank_width, k, S * K1 * self.r * self.banks))

    def mask_from_levels(self, weight, levels, previous=None):
        M, N = weight.shape
        cnt = self.counts((M, N), levels)
        s = self._padded_scores(weight, previous)
        Mp, Np = s.shape
        block_mask = _cbb_block_mask(s, self.r, self.c, cnt["K1"])          # (Mp/r, Np/c)
        level1 = _expand_blocks(block_mask, self.r, self.c)
        # Level 2 inside kept blocks: banks of c/B along each row segment.
        s2 = _pruned_outside(level1, s)
        n_banks = Np // self.bank_width
        ks = _group_counts(levels[1], _real_widths(N, self.bank_width, n_banks))
        banked = s2.view(Mp, n_banks, self.bank_width)
        level2 = _topk_per_group(banked, ks).view(Mp, Np)
        return _finish(level1 & level2, (M, N), previous)
