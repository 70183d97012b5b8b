"""Unstructured magnitude pruning: no structure, the baseline every pattern is compared with."""

from __future__ import annotations

from fitformer.sparsity.patterns.base import (
    Pattern,
    _check_density,
    _finish,
    _floor,
    _scores,
    _topk_mask,
)
from fitformer.sparsity.patterns.registry import register


@register
class Unstructured(Pattern):
    """Keep the ``floor(d * M * N)`` weights of largest magnitude (whole matrix)."""

    name = "unstructured"
    help = "the weights of largest magnitude in the whole matrix"

    def plan(self, shape, sparsity):
        return (_check_density(sparsity),)

    def counts(self, shape, levels):
        return {"kept": _floor(levels[0] * shape[0] * shape[1])}

    def mask_count_factors(self, shape, counts):
        """``C(M * N, kept)``."""
        return ((shape[0] * shape[1], counts["kept"], 1),)

    def mask_from_levels(self, weight, levels, previous=None):
        s = _scores(weight, previous).flatten()
        k = self.counts(tuple(weight.shape), levels)["kept"]
        return _finish(_topk_mask(s, k, 0).view(weight.shape), tuple(weight.shape), previous)
