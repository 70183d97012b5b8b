"""Block pruning: whole ``r x c`` tiles, chosen by L2 norm over the whole matrix; the block
helpers that column-balanced block and HP share."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fitformer.errors import FitformerError
from fitformer.sparsity.patterns.base import (
    Pattern,
    _check_density,
    _finish,
    _floor,
    _pad_to,
    _pruned_outside,
    _scores,
    _topk_mask,
)
from fitformer.sparsity.patterns.registry import register

if TYPE_CHECKING:
    import torch


def _block_norms(scores: torch.Tensor, r: int, c: int) -> torch.Tensor:
    """L2 norms of ``r x c`` blocks of a padded score matrix, shape ``(M/r, N/c)``; a block
    with any ``-inf`` (pruned) entry counts only its kept entries, a fully pruned one is
    ``-inf``."""
    Mp, Np = scores.shape
    blocks = scores.view(Mp // r, r, Np // c, c)
    # Scores are magnitudes (>= 0) or -inf for pruned weights: clamp_min(0) drops the
    # pruned ones from the norm, the block maximum tells whether any weight is kept.
    sq = blocks.clamp_min(0).square().sum(dim=(1, 3)).sqrt()
    any_kept = blocks.amax(dim=(1, 3)) > -math.inf
    return _pruned_outside(any_kept, sq)


def _expand_blocks(block_mask: torch.Tensor, r: int, c: int) -> torch.Tensor:
    return block_mask.repeat_interleave(r, 0).repeat_interleave(c, 1)


@dataclass
class _Blocked(Pattern):
    r: int = 16
    c: int = 16

    def __post_init__(self):
        if self.r < 1 or self.c < 1:
            raise FitformerError(f"block {self.r}x{self.c} must be positive; e.g. --block 16x16")

    @classmethod
    def from_options(cls, *, block=(16, 16), banks=4, level2_density=None, nm_m=4):
        return cls(*block)

    def params(self):
        return {"r": self.r, "c": self.c}

    def _padded_scores(self, weight, previous, col_multiple=None):
        s = _scores(weight, previous)
        return _pad_to(s, self.r, col_multiple or self.c)


@register
@dataclass
class Block(_Blocked):
    """Keep the ``floor(d * M * N / (r * c))`` ``r x c`` blocks of largest L2 norm (whole
    matrix; ``floor(d * nblocks)`` when ``r x c`` divides the shape). A partial edge block
    holds fewer than ``r * c`` real weights, so at most ``d * M * N`` real weights are kept."""

    name = "block"
    help = "the r x c blocks of largest L2 norm in the whole matrix"

    def plan(self, shape, sparsity):
        return (_check_density(sparsity),)

    def counts(self, shape, levels):
        return {"blocks": _floor(levels[0] * shape[0] * shape[1] / (self.r * self.c))}

    def mask_count_factors(self, shape, counts):
        """``C(Mb * S, blocks)`` with ``Mb = ceil(M / r)``, ``S = ceil(N / c)``."""
        Mb, S = math.ceil(shape[0] / self.r), math.ceil(shape[1] / self.c)
        return ((Mb * S, counts["blocks"], 1),)

    def mask_from_levels(self, weight, levels, previous=None):
        norms = _block_norms(self._padded_scores(weight, previous), self.r, self.c)
        keep = _topk_mask(norms.flatten(), self.counts(tuple(weight.shape), levels)["blocks"], 0)
        bm = _expand_blocks(keep.view(norms.shape), self.r, self.c)
        return _finish(bm, tuple(weight.shape), previous)
