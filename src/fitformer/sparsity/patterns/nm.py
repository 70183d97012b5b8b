"""N:M pruning: every ``m`` consecutive weights of a row keep ``n`` (2:4 at sparsity 0.5)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from fitformer.errors import FitformerError
from fitformer.sparsity.patterns.base import Pattern, _check_density, _floor, _row_groups_mask
from fitformer.sparsity.patterns.registry import register


def check_nm_m_given(nm_m: int | None, pattern: str) -> None:
    """Refuse ``--nm-m`` (``nm_m`` not ``None``: the user gave it) with a ``pattern`` other
    than ``nm``, which would ignore it.

    Raises:
        FitformerError: naming the flag and the fix.
    """
    if nm_m is not None and pattern != "nm":
        raise FitformerError(f"--nm-m {nm_m} is the m of --pattern nm; --pattern {pattern} "
                             "has no N:M groups: drop --nm-m.")


@register
@dataclass
class NM(Pattern):
    """N:M: every ``m`` consecutive weights along a row keep ``n = floor(d * m)``; a partial
    last group of ``g < m`` real weights keeps ``floor(d * g)``."""

    m: int = 4
    name = "nm"
    help = "N:M: every m (--nm-m) consecutive weights of a row keep n"
    balanced = True

    def __post_init__(self):
        if self.m < 1:
            raise FitformerError(f"--nm-m {self.m}: N:M groups m weights, so m >= 1 (and "
                                 "m >= 20 for the profile grid's sparsity 0.95).")

    @classmethod
    def from_options(cls, *, block=(16, 16), banks=4, level2_density=None, nm_m=4):
        return cls(nm_m)

    def check_shape(self, name, shape):
        """A group wider than a row would be one padded group per row, ``m`` wide (an
        ``m`` of a million made training 80x slower): refused."""
        if self.m > shape[1]:
            raise FitformerError(f"{name} {shape[0]}x{shape[1]}: N:M with m={self.m} groups "
                                 f"more weights than a row holds ({shape[1]}); choose --nm-m "
                                 f"{shape[1]} or less.")

    def params(self):
        return {"m": self.m}

    def counts(self, shape, levels):
        return {"n": _floor(levels[0] * self.m), "m": self.m}

    def mask_count_factors(self, shape, counts):
        """``C(m, n) ** (M * ceil(N / m))``."""
        return ((self.m, counts["n"], shape[0] * math.ceil(shape[1] / self.m)),)

    def plan(self, shape, sparsity):
        d = _check_density(sparsity)
        if d > 0 and _floor(d * self.m) == 0:
            raise FitformerError(
                f"N:M with m={self.m} cannot reach sparsity {sparsity} without pruning "
                f"everything (n = floor({d:.3g} * {self.m}) = 0); use a larger m (--nm-m "
                f"{math.ceil(1 / d - 1e-9)} or more)."
            )
        return (d,)

    def mask_from_levels(self, weight, levels, previous=None):
        groups = math.ceil(weight.shape[1] / self.m)
        return _row_groups_mask(weight, previous, levels[0], self.m, groups)
