"""The interface every sparsity pattern implements, and the mask helpers they share.

A pattern turns a weight ``W`` of shape ``(M, N)`` (rows = outputs, columns = inputs) and a
requested sparsity into a boolean mask of the same shape, through one or more **levels**
(:class:`Pattern`). The helpers pick top-k entries by magnitude on a padded score matrix
(package docstring: non-divisible shapes, shrinking).

torch is imported inside the helpers, not here: the CLI reads the registry (its
``--pattern`` choices) at start-up and must not pay for importing torch.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fitformer.errors import FitformerError

if TYPE_CHECKING:
    import torch

_EPS = 1e-9


def _floor(x: float) -> int:
    return int(math.floor(x + _EPS))


def _check_density(sparsity: float) -> float:
    if not 0.0 <= sparsity <= 1.0 or math.isnan(sparsity):
        raise FitformerError(f"sparsity {sparsity} is outside [0, 1]; give e.g. --sparsity 0.8.")
    return 1.0 - sparsity


def _pad_to(x: torch.Tensor, rows: int, cols: int, value: float = -math.inf) -> torch.Tensor:
    import torch.nn.functional as F

    M, N = x.shape
    pr, pc = (-M) % rows, (-N) % cols
    if pr or pc:
        x = F.pad(x, (0, pc, 0, pr), value=value)
    return x


def _pruned_outside(keep: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """``scores`` where ``keep`` (bool, same shape), ``-inf`` (pruned) elsewhere."""
    import torch

    return torch.where(keep, scores, torch.full_like(scores, -math.inf))


def _scores(weight: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
    s = weight.detach().abs().float()
    if previous is not None:
        s = _pruned_outside(previous, s)
    return s


def _topk_mask(scores: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """Boolean mask keeping the ``k`` largest entries of ``scores`` along ``dim``."""
    import torch

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
    import torch

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
    import torch

    start = torch.arange(groups, dtype=torch.int64) * width
    return (n_real - start).clamp(0, width)


def _group_counts(density: float, widths: torch.Tensor) -> torch.Tensor:
    """``floor(density * w)`` per group of ``w`` real columns (int64, same shape)."""
    import torch

    return torch.tensor([_floor(density * int(w)) for w in widths.tolist()],
                        dtype=torch.int64)


def _finish(mask_padded: torch.Tensor, shape: tuple[int, int],
            previous: torch.Tensor | None) -> torch.Tensor:
    M, N = shape
    mask = mask_padded[:M, :N].contiguous()
    return mask & previous if previous is not None else mask


def _row_groups_mask(weight: torch.Tensor, previous: torch.Tensor | None, density: float,
                     width: int, groups: int) -> torch.Tensor:
    """Mask (bool, ``weight.shape``) in which each of the ``groups`` groups of ``width``
    consecutive columns of every row (the row padded to ``groups * width``) keeps
    ``floor(density * w)`` of its ``w`` real columns: bank-balanced banks, N:M groups."""
    M, N = weight.shape
    s = _pad_to(_scores(weight, previous), 1, width * groups)
    ks = _group_counts(density, _real_widths(N, width, groups))
    m = _topk_per_group(s.view(M, groups, width), ks).view(M, groups * width)
    return _finish(m, (M, N), previous)


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
    """A sparsity pattern with one or more levels (package docstring).

    A subclass is registered with :func:`~fitformer.sparsity.patterns.registry.register`
    and declares, as class attributes, what the rest of fitformer reads from the registry:

    Attributes:
        name: the ``--pattern`` value; ``pattern`` in run keys, ``pruning.json`` and reports.
        help: one line for ``--help`` and the docs: the rule a mask obeys.
        n_levels: levels the gradual pruner schedules (HP: 2).
        balanced: every unit of the rule (stripe, bank, N:M group) keeps the same count, so
            a storage format that follows the rule needs no pointers (design.md §5).
        stripe_balanced: the hardware structure. True when every stripe of ``c`` columns
            keeps the same ``K1`` blocks (count ``"K1"``) and every bank of ``c / B``
            columns of a kept row segment the same ``k`` weights (count ``"k"``; all
            ``c / B`` when the pattern has no ``"k"``): the accelerator's stripe profile
            then follows from the counts alone (design.md §6,
            :func:`fitformer.hardware.workload.structure_from_counts`). False: the profile
            depends on the weights and is measured on masks.
    """

    name: str = ""
    help: str = ""
    n_levels: int = 1
    balanced: bool = False
    stripe_balanced: bool = False

    @classmethod
    def from_options(cls, *, block: tuple[int, int] = (16, 16), banks: int = 4,
                     level2_density: float | None = None, nm_m: int = 4) -> Pattern:
        """The pattern from the command line's options (``--block``, ``--banks``,
        ``--level2-density``, ``--nm-m``), taking those it has; this default takes none.

        Raises:
            FitformerError: invalid parameters.
        """
        return cls()

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

    def check_shape(self, name: str, shape: tuple[int, int]) -> None:
        """Refuse a matrix ``shape`` (rows, columns) the pattern's parameters do not fit;
        the default accepts any (blocks are padded, design.md §3).

        Raises:
            FitformerError: naming the matrix ``name`` and the fix.
        """
        return None

    @abstractmethod
    def counts(self, shape: tuple[int, int], levels: tuple[float, ...]) -> dict[str, int]:
        """Integer counts the levels round to (documented per pattern)."""

    @abstractmethod
    def mask_count_factors(self, shape: tuple[int, int],
                           counts: dict[str, int]) -> tuple[tuple[int, int, int], ...]:
        """How many masks of shape ``(M, N)`` the rule allows with ``counts``, as factors
        ``(n, k, times)``: the number is the product of ``C(n, k) ** times`` (``C`` the
        binomial coefficient), block and bank counts on the padded shape (``ceil``).
        :func:`fitformer.formats.bounds.mask_log2_count` turns it into the storage lower
        bound (design.md §5)."""

    def params(self) -> dict:
        """The pattern's parameters, for run keys and reports
        (:func:`~fitformer.sparsity.patterns.registry.pattern_from_params` inverts it)."""
        return {}

    @property
    def has_blocks(self) -> bool:
        """Whether the pattern prunes ``r x c`` blocks (it takes ``--block``): its
        :meth:`params` name a block height ``r`` or width ``c``."""
        return bool({"r", "c"} & set(self.params()))

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


def check_not_emptied(pattern: Pattern, name: str, shape: tuple[int, int],
                      levels: tuple[float, ...], sparsity: float) -> None:
    """Refuse a plan that rounds a layer down to nothing while the request keeps weights
    (a block larger than the matrix, say).

    Raises:
        FitformerError: naming the layer, its counts and the fix.
    """
    pattern.check_shape(name, shape)
    counts = pattern.counts(shape, levels)
    if sparsity < 1.0 and any(v == 0 for v in counts.values()):
        raise FitformerError(
            f"{name} {shape[0]}x{shape[1]}: {pattern.name} at sparsity {sparsity:g} rounds to "
            f"{counts}, pruning the whole matrix; use a smaller --block or a lower --sparsity."
        )


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
