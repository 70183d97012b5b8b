"""Column-balanced block pruning (Qi et al., ISQED 2021): every stripe keeps the same number
of blocks. HP's level 1."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fitformer.sparsity.patterns.base import _check_density, _finish, _floor, _topk_mask
from fitformer.sparsity.patterns.block import _block_norms, _Blocked, _expand_blocks
from fitformer.sparsity.patterns.registry import register

if TYPE_CHECKING:
    import torch


def _level1_count(d1: float, M: int, r: int) -> int:
    """Blocks kept per stripe: ``floor(d1 * M / r)`` on the real row count (every block,
    ``ceil(M / r)``, when ``d1 = 1``), so kept real rows never exceed ``d1 * M``."""
    if d1 >= 1.0 - 1e-12:  # only d1 = 1 up to rounding: not a density 1e-9 below it
        return math.ceil(M / r)
    return _floor(d1 * M / r)


def _cbb_block_mask(padded_scores: torch.Tensor, r: int, c: int, K1: int) -> torch.Tensor:
    """Column-balanced level 1: in every stripe (block column) keep ``K1`` blocks."""
    norms = _block_norms(padded_scores, r, c)  # (M/r, N/c): rows of blocks x stripes
    return _topk_mask(norms, K1, 0)


@register
@dataclass
class ColumnBalancedBlock(_Blocked):
    """Every stripe of ``c`` columns keeps the same ``K1 = floor(d * M / r)`` blocks (real
    ``M``; every block when ``d = 1``)."""

    name = "cbb"
    help = "column-balanced block, HP's level 1: every stripe of c columns keeps K1 blocks"
    balanced = True
    stripe_balanced = True

    def plan(self, shape, sparsity):
        return (_check_density(sparsity),)

    def counts(self, shape, levels):
        return {"K1": _level1_count(levels[0], shape[0], self.r)}

    def mask_count_factors(self, shape, counts):
        """``C(Mb, K1) ** S`` with ``Mb = ceil(M / r)``, ``S = ceil(N / c)``."""
        Mb, S = math.ceil(shape[0] / self.r), math.ceil(shape[1] / self.c)
        return ((Mb, counts["K1"], S),)

    def mask_from_levels(self, weight, levels, previous=None):
        K1 = self.counts(tuple(weight.shape), levels)["K1"]
        bm = _cbb_block_mask(self._padded_scores(weight, previous), self.r, self.c, K1)
        return _finish(_expand_blocks(bm, self.r, self.c), tuple(weight.shape), previous)
