"""Sparsity patterns: the rule a mask obeys (design.md §3).

A pattern turns a weight ``W`` of shape ``(M, N)`` (rows = outputs, columns = inputs) and a
requested sparsity into a boolean mask of the same shape. Every pattern is described by one
or more **levels**, each with its own density; the mask's density is their product. The
gradual pruner schedules the levels (:mod:`fitformer.sparsity.pruners`), so hierarchical
pruning is a pattern of two levels, not a special path.

=====================  =====================================================================
pattern                rule (``r x c`` blocks, ``B`` banks)
=====================  =====================================================================
``unstructured``       the ``floor(d * M * N)`` weights of largest magnitude
``block``              the ``floor(d * nblocks)`` ``r x c`` blocks of largest L2 norm
``cbb``                column-balanced block (level 1 alone): every stripe of ``c`` columns
                       keeps the same ``K1`` blocks of largest L2 norm (Qi et al., ISQED 2021)
``bank``               bank-balanced (Cao et al., FPGA 2019): every row is split into ``B``
                       banks of ``N / B`` columns; every bank keeps the same ``k`` weights
``nm``                 N:M: every ``m`` consecutive weights of a row keep ``n`` (2:4)
``hp``                 hierarchical: level 1 = ``cbb``; level 2 = inside every kept row
                       segment (length ``c``), every bank of ``c / B`` keeps ``k`` weights
=====================  =====================================================================

Counts are rounded down and computed on the **real** matrix, so the achieved sparsity is
never below the request: a mask keeps at most ``floor(d * M * N)`` real weights. For shapes
the pattern's units divide, it is also within one grid step of the request.

**Non-divisible shapes** (e.g. hidden 312 with ``c = 16``): ``W`` is padded to the next
multiple of the block (bank, group) size with scores of ``-inf``, so padded positions are
picked last and then cropped; they never count as kept weights. The counts use the real
sizes: level 1 keeps ``K1 = floor(d1 * M / r)`` blocks per stripe (``M / r`` unrounded; all
``ceil(M / r)`` when ``d1 = 1``), so a stripe keeps at most ``d1 * M`` real rows even when
its partial trailing block is chosen; a bank (or N:M group) with ``w`` real columns of its
padded width keeps ``floor(d2 * w)`` weights (``k`` in every full bank, fewer in a partial
one, none in a bank that is all padding). Every invariant of a divisible shape (``K1`` blocks
per stripe, ``k`` per bank of every kept row segment) holds unchanged.

**Shrinking**: given ``previous``, only weights kept by ``previous`` can be kept (scores of
pruned weights are ``-inf`` and the result is intersected with ``previous``); the invariants
hold when ``previous`` obeys the same pattern at an equal or higher level density.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from fitformer.errors import FitformerError

_EPS = 1e-9


def _floor(x: float) -> int:
    return int(math.floor(x + _EPS))


def _check_density(sparsity: float) -> float:
    if not 0.0 <= sparsity <= 1.0 or math.isnan(sparsity):
        raise FitformerError(f"sparsity {sparsity} is outside [0, 1]; give e.g. --sparsity 0.8.")
    return 1.0 - sparsity


def _pad_to(x: torch.Tensor, rows: int, cols: int, value: float = -math.inf) -> torch.Tensor:
    M, N = x.shape
    pr, pc = (-M) % rows, (-N) % cols
    if pr or pc:
        x = F.pad(x, (0, pc, 0, pr), value=value)
    return x


def _scores(weight: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
    s = weight.detach().abs().float()
    if previous is not None:
        s = torch.where(previous, s, torch.full_like(s, -math.inf))
    return s


def _topk_mask(scores: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """Boolean mask keeping the ``k`` largest entries of ``scores`` along ``dim``."""
    n = scores.shape[dim]
    k = max(0, min(k, n))
    if k == n:
        return torch.ones_like(scores, dtype=torch.bool)
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if k == 0:
        return mask
    idx = torch.topk(scores, k, dim=dim, sorted=False).indices
    return mask.scatter_(dim, idx, True)


def _topk_per_group(scores: torch.Tensor, ks: torch.Tensor) -> torch.Tensor:
    """Boolean mask keeping, in every group ``g`` (dim -2 of ``scores`` ``(..., G, w)``), the
    ``ks[g]`` largest entries along the last dim (``ks``: int64 ``(G,)``, each in [0, w])."""
    kmax = int(ks.max().item()) if ks.numel() else 0
    if ks.numel() == 0 or bool((ks == kmax).all()):
        return _topk_mask(scores, kmax, scores.ndim - 1)
    idx = torch.topk(scores, kmax, dim=-1, sorted=True).indices        # (..., G, kmax)
    valid = torch.arange(kmax) < ks[:, None]                            # (G, kmax)
    mask = torch.zeros_like(scores, dtype=torch.bool)
    return mask.scatter_(-1, idx, valid.expand_as(idx).contiguous())


def _real_widths(n_real: int, width: int, groups: int) -> torch.Tensor:
    """Real (unpadded) columns in each of ``groups`` consecutive groups of ``width`` columns
    of a row padded from ``n_real`` columns: int64 ``(groups,)``."""
    start = torch.arange(groups, dtype=torch.int64) * width
    return (n_real - start).clamp(0, width)


def _group_counts(density: float, widths: torch.Tensor) -> torch.Tensor:
    """``floor(density * w)`` per group of ``w`` real columns (int64, same shape)."""
    return torch.tensor([_floor(density * int(w)) for w in widths.tolist()],
                        dtype=torch.int64)


def _level1_count(d1: float, M: int, r: int) -> int:
    """Blocks kept per stripe: ``floor(d1 * M / r)`` on the real row count (every block,
    ``ceil(M / r)``, when ``d1 = 1``), so kept real rows never exceed ``d1 * M``."""
    if d1 >= 1.0 - 1e-12:  # only d1 = 1 up to rounding: not a density 1e-9 below it
        return math.ceil(M / r)
    return _floor(d1 * M / r)


@dataclass(frozen=True)
class LayerPlan:
    """The per-layer outcome of a pattern: level densities, counts and achieved sparsity.

    Attributes:
        pattern: pattern name.
        shape: ``(M, N)`` of the weight.
        levels: density of each level (fractions 0-1), e.g. ``(d1, d2)`` for HP.
        counts: integer counts per level (``{"K1": ..., "k": ...}`` for HP).
        achieved_sparsity: sparsity of the mask's real (unpadded) elements.
    """

    pattern: str
    shape: tuple[int, int]
    levels: tuple[float, ...]
    counts: dict[str, int] = field(default_factory=dict)
    achieved_sparsity: float | None = None


class Pattern(ABC):
    """A sparsity pattern with one or more levels (see module docstring)."""

    name: str = ""
    n_levels: int = 1

    @abstractmethod
    def plan(self, shape: tuple[int, int], sparsity: float) -> tuple[float, ...]:
        """Level densities (each a fraction in [0, 1]) for a requested ``sparsity``.

        Raises:
            FitformerError: the sparsity is out of range or not reachable by this pattern.
        """

    @abstractmethod
    def mask_from_levels(self, weight: torch.Tensor, levels: tuple[float, ...],
                         previous: torch.Tensor | None = None) -> torch.Tensor:
        """The mask (bool, ``weight.shape``) at the given level densities."""

    @abstractmethod
    def counts(self, shape: tuple[int, int], levels: tuple[float, ...]) -> dict[str, int]:
        """Integer counts the levels round to (documented per pattern)."""

    def params(self) -> dict:
        """The pattern's parameters, for run keys and reports."""
        return {}

    def mask(self, weight: torch.Tensor, sparsity: float,
             previous: torch.Tensor | None = None) -> torch.Tensor:
        """Mask of ``weight`` (2-D float tensor ``(M, N)``) at the requested ``sparsity``.

        Returns:
            bool tensor of ``weight.shape`` keeping at most ``floor((1 - sparsity) * M * N)``
            weights (its sparsity is >= the request, whatever the shape).

        Raises:
            FitformerError: ``weight`` is not 2-D, or the sparsity is outside [0, 1] or not
                reachable by the pattern.
        """
        if weight.ndim != 2:
            raise FitformerError(f"{self.name}: expected a 2-D weight, got {tuple(weight.shape)}")
        return self.mask_from_levels(weight, self.plan(tuple(weight.shape), sparsity), previous)

    def describe(self, weight: torch.Tensor, mask: torch.Tensor,
                 levels: tuple[float, ...]) -> LayerPlan:
        shape = tuple(weight.shape)
        # Exact count over the real elements (a float32 mean would round 0.8 to 0.79999...).
        return LayerPlan(self.name, shape, tuple(levels), self.counts(shape, levels),
                         1.0 - int(mask.sum()) / max(1, mask.numel()))


def _finish(mask_padded: torch.Tensor, shape: tuple[int, int],
            previous: torch.Tensor | None) -> torch.Tensor:
    M, N = shape
    mask = mask_padded[:M, :N].contiguous()
    return mask & previous if previous is not None else mask


class Unstructured(Pattern):
    """Keep the ``floor(d * M * N)`` weights of largest magnitude (whole matrix)."""

    name = "unstructured"

    def plan(self, shape, sparsity):
        return (_check_density(sparsity),)

    def counts(self, shape, levels):
        return {"kept": _floor(levels[0] * shape[0] * shape[1])}

    def mask_from_levels(self, weight, levels, previous=None):
        s = _scores(weight, previous).flatten()
        k = self.counts(tuple(weight.shape), levels)["kept"]
        return _finish(_topk_mask(s, k, 0).view(weight.shape), tuple(weight.shape), previous)


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
    return torch.where(any_kept, sq, torch.full_like(sq, -math.inf))


def _expand_blocks(block_mask: torch.Tensor, r: int, c: int) -> torch.Tensor:
    return block_mask.repeat_interleave(r, 0).repeat_interleave(c, 1)


@dataclass
class _Blocked(Pattern):
    r: int = 16
    c: int = 16

    def __post_init__(self):
        if self.r < 1 or self.c < 1:
            raise FitformerError(f"block {self.r}x{self.c} must be positive; e.g. --block 16x16")

    def params(self):
        return {"r": self.r, "c": self.c}

    def _padded_scores(self, weight, previous, col_multiple=None):
        s = _scores(weight, previous)
        return _pad_to(s, self.r, col_multiple or self.c)


@dataclass
class Block(_Blocked):
    """Keep the ``floor(d * M * N / (r * c))`` ``r x c`` blocks of largest L2 norm (whole
    matrix; ``floor(d * nblocks)`` when ``r x c`` divides the shape). A partial edge block
    holds fewer than ``r * c`` real weights, so at most ``d * M * N`` real weights are kept."""

    name = "block"

    def plan(self, shape, sparsity):
        return (_check_density(sparsity),)

    def counts(self, shape, levels):
        return {"blocks": _floor(levels[0] * shape[0] * shape[1] / (self.r * self.c))}

    def mask_from_levels(self, weight, levels, previous=None):
        norms = _block_norms(self._padded_scores(weight, previous), self.r, self.c)
        keep = _topk_mask(norms.flatten(), self.counts(tuple(weight.shape), levels)["blocks"], 0)
        bm = _expand_blocks(keep.view(norms.shape), self.r, self.c)
        return _finish(bm, tuple(weight.shape), previous)


def _cbb_block_mask(padded_scores: torch.Tensor, r: int, c: int, K1: int) -> torch.Tensor:
    """Column-balanced level 1: in every stripe (block column) keep ``K1`` blocks."""
    norms = _block_norms(padded_scores, r, c)  # (M/r, N/c): rows of blocks x stripes
    return _topk_mask(norms, K1, 0)


@dataclass
class ColumnBalancedBlock(_Blocked):
    """Every stripe of ``c`` columns keeps the same ``K1 = floor(d * M / r)`` blocks (real
    ``M``; every block when ``d = 1``)."""

    name = "cbb"

    def plan(self, shape, sparsity):
        return (_check_density(sparsity),)

    def counts(self, shape, levels):
        return {"K1": _level1_count(levels[0], shape[0], self.r)}

    def mask_from_levels(self, weight, levels, previous=None):
        K1 = self.counts(tuple(weight.shape), levels)["K1"]
        bm = _cbb_block_mask(self._padded_scores(weight, previous), self.r, self.c, K1)
        return _finish(_expand_blocks(bm, self.r, self.c), tuple(weight.shape), previous)


@dataclass
class BankBalanced(Pattern):
    """Cao et al. 2019: each row split into ``B`` banks of ``ceil(N / B)`` columns; every bank
    keeps the same ``k = floor(d * ceil(N / B))`` weights of largest magnitude. When ``B``
    does not divide ``N``, a partial last bank of ``w`` real columns keeps ``floor(d * w)``
    (a bank of padding alone keeps none)."""

    banks: int = 4
    name = "bank"

    def __post_init__(self):
        if self.banks < 1:
            raise FitformerError(f"banks must be >= 1, got {self.banks}; e.g. --banks 4")

    def params(self):
        return {"B": self.banks}

    def plan(self, shape, sparsity):
        return (_check_density(sparsity),)

    def counts(self, shape, levels):
        return {"k": _floor(levels[0] * math.ceil(shape[1] / self.banks))}

    def mask_from_levels(self, weight, levels, previous=None):
        M, N = weight.shape
        width = math.ceil(N / self.banks)
        s = _pad_to(_scores(weight, previous), 1, width * self.banks)
        ks = _group_counts(levels[0], _real_widths(N, width, self.banks))
        banked = s.view(M, self.banks, width)
        m = _topk_per_group(banked, ks).view(M, self.banks * width)
        return _finish(m, (M, N), previous)


@dataclass
class NM(Pattern):
    """N:M: every ``m`` consecutive weights along a row keep ``n = floor(d * m)``; a partial
    last group of ``g < m`` real weights keeps ``floor(d * g)``."""

    m: int = 4
    name = "nm"

    def __post_init__(self):
        if self.m < 1:
            raise FitformerError(f"N:M needs m >= 1, got {self.m}")

    def params(self):
        return {"m": self.m}

    def counts(self, shape, levels):
        return {"n": _floor(levels[0] * self.m), "m": self.m}

    def plan(self, shape, sparsity):
        d = _check_density(sparsity)
        if d > 0 and _floor(d * self.m) == 0:
            raise FitformerError(
                f"N:M with m={self.m} cannot reach sparsity {sparsity} without pruning "
                f"everything (n = floor({d:.3g} * {self.m}) = 0); use a larger m."
            )
        return (d,)

    def mask_from_levels(self, weight, levels, previous=None):
        M, N = weight.shape
        s = _pad_to(_scores(weight, previous), 1, self.m)
        groups = s.shape[1] // self.m
        ns = _group_counts(levels[0], _real_widths(N, self.m, groups))
        m = _topk_per_group(s.view(M, groups, self.m), ns).view(M, -1)
        return _finish(m, (M, N), previous)


LEVEL2_GRID_NOTE = "d2 must be a multiple of B / c (k weights of c / B per bank)"


@dataclass
class Hierarchical(_Blocked):
    """HP (design.md §3): level 1 = column-balanced blocks (``K1`` per stripe), level 2 =
    bank-balanced weights inside kept blocks (``k`` per bank of ``c / B`` in every kept row
    segment). ``d = d1 * d2`` with ``d1 = K1 * r / M`` and ``d2 = k * B / c``. Counts use
    the real shape (module docstring): ``K1 = floor(d1 * M / r)``, and a partial bank of
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
    n_levels = 2

    def __post_init__(self):
        super().__post_init__()
        if self.banks < 1 or self.c % self.banks:
            raise FitformerError(
                f"--banks {self.banks} must divide the block width c = {self.c} "
                f"(e.g. --banks 4 with --block 16x16)."
            )
        if self.level2_density is not None:
            self._check_d2(self.level2_density)

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

    def mask_from_levels(self, weight, levels, previous=None):
        M, N = weight.shape
        cnt = self.counts((M, N), levels)
        s = self._padded_scores(weight, previous)
        Mp, Np = s.shape
        block_mask = _cbb_block_mask(s, self.r, self.c, cnt["K1"])          # (Mp/r, Np/c)
        level1 = _expand_blocks(block_mask, self.r, self.c)
        # Level 2 inside kept blocks: banks of c/B along each row segment.
        s2 = torch.where(level1, s, torch.full_like(s, -math.inf))
        n_banks = Np // self.bank_width
        ks = _group_counts(levels[1], _real_widths(N, self.bank_width, n_banks))
        banked = s2.view(Mp, n_banks, self.bank_width)
        level2 = _topk_per_group(banked, ks).view(Mp, Np)
        return _finish(level1 & level2, (M, N), previous)


def check_not_emptied(pattern: Pattern, name: str, shape: tuple[int, int],
                      levels: tuple[float, ...], sparsity: float) -> None:
    """Refuse a plan that rounds a layer down to nothing while the request keeps weights
    (a block larger than the matrix, say).

    Raises:
        FitformerError: naming the layer, its counts and the fix.
    """
    counts = pattern.counts(shape, levels)
    if sparsity < 1.0 and any(v == 0 for v in counts.values()):
        raise FitformerError(
            f"{name} {shape[0]}x{shape[1]}: {pattern.name} at sparsity {sparsity:g} rounds to "
            f"{counts}, pruning the whole matrix; use a smaller --block or a lower --sparsity."
        )


PATTERNS = ("unstructured", "block", "cbb", "bank", "nm", "hp")


def make_pattern(name: str, *, block: tuple[int, int] = (16, 16), banks: int = 4,
                 level2_density: float | None = None, nm_m: int = 4) -> Pattern:
    """The pattern called ``name`` with the design.md §3 defaults.

    Raises:
        FitformerError: unknown name or invalid parameters.
    """
    r, c = block
    if name == "unstructured":
        return Unstructured()
    if name == "block":
        return Block(r, c)
    if name == "cbb":
        return ColumnBalancedBlock(r, c)
    if name == "bank":
        return BankBalanced(banks)
    if name == "nm":
        return NM(nm_m)
    if name == "hp":
        return Hierarchical(r, c, banks=banks, level2_density=level2_density)
    raise FitformerError(f"unknown pattern {name!r}; choose from {', '.join(PATTERNS)}.")


def parse_dims(text: str, flag: str = "--block", example: str = "16x16") -> tuple[int, int]:
    """``"16x16"`` -> ``(16, 16)``: two positive integers joined by ``x`` (rows x columns).

    Raises:
        FitformerError: naming ``flag`` and an ``example``.
    """
    try:
        a, b = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise FitformerError(f"{flag} {text!r} must look like {example} (rows x columns)."
                             ) from None
    if a < 1 or b < 1:
        raise FitformerError(f"{flag} {text!r} must be positive, e.g. {example}.")
    return a, b


def parse_block(text: str) -> tuple[int, int]:
    """``--block RxC`` -> ``(r, c)`` (see :func:`parse_dims`)."""
    return parse_dims(text, "--block", "16x16")
