"""Bank-balanced pruning (Cao et al., FPGA 2019): every bank of a row keeps the same count."""

from __future__ import annotations

import math
from dataclasses import dataclass

from fitformer.errors import FitformerError
from fitformer.sparsity.patterns.base import Pattern, _check_density, _floor, _row_groups_mask
from fitformer.sparsity.patterns.registry import register


@register
@dataclass
class BankBalanced(Pattern):
    """Cao et al. 2019: each row split into ``B`` banks of ``ceil(N / B)`` columns; every bank
    keeps the same ``k = floor(d * ceil(N / B))`` weights of largest magnitude. When ``B``
    does not divide ``N``, a partial last bank of ``w`` real columns keeps ``floor(d * w)``
    (a bank of padding alone keeps none)."""

    banks: int = 4
    name = "bank"
    help = "bank-balanced: every row's B banks keep the same k weights"
    balanced = True

    def __post_init__(self):
        if self.banks < 1:
            raise FitformerError(f"banks must be >= 1, got {self.banks}; e.g. --banks 4")

    @classmethod
    def from_options(cls, *, block=(16, 16), banks=4, level2_density=None, nm_m=4):
        return cls(banks)

    def params(self):
        return {"B": self.banks}

    def plan(self, shape, sparsity):
        return (_check_density(sparsity),)

    def counts(self, shape, levels):
        return {"k": _floor(levels[0] * math.ceil(shape[1] / self.banks))}

    def mask_count_factors(self, shape, counts):
        """``C(ceil(N / B), k) ** (M * B)``."""
        return ((math.ceil(shape[1] / self.banks), counts["k"], shape[0] * self.banks),)

    def mask_from_levels(self, weight, levels, previous=None):
        width = math.ceil(weight.shape[1] / self.banks)
        return _row_groups_mask(weight, previous, levels[0], width, self.banks)
