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

**One module per pattern.** Each pattern is a :class:`Pattern` subclass in its own module of
this package, registered with :func:`register` (:mod:`.registry`); the package imports every
module it holds, so adding a pattern is adding one file (docs/design.md §3, "Adding a
pattern"). ``--pattern`` choices, the storage lower bound and the accelerator workload read
the registry (:func:`pattern_names`, :func:`pattern_class`, :func:`make_pattern`).
"""

from __future__ import annotations

import importlib
import pkgutil

from fitformer.sparsity.patterns.base import (
    LayerPlan,
    Pattern,
    check_not_emptied,
    parse_block,
    parse_dims,
)
from fitformer.sparsity.patterns.registry import (
    make_pattern,
    pattern_class,
    pattern_from_params,
    pattern_names,
    register,
)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

# The built-in patterns, importable from here as before the package existed.
from fitformer.sparsity.patterns.bank import BankBalanced  # noqa: E402
from fitformer.sparsity.patterns.block import Block  # noqa: E402
from fitformer.sparsity.patterns.cbb import ColumnBalancedBlock  # noqa: E402
from fitformer.sparsity.patterns.hp import LEVEL2_GRID_NOTE, Hierarchical  # noqa: E402
from fitformer.sparsity.patterns.nm import NM  # noqa: E402
from fitformer.sparsity.patterns.unstructured import Unstructured  # noqa: E402

__all__ = ["LEVEL2_GRID_NOTE", "NM", "BankBalanced", "Block", "ColumnBalancedBlock",
           "Hierarchical", "LayerPlan", "Pattern", "Unstructured", "check_not_emptied",
           "make_pattern", "parse_block", "parse_dims", "pattern_class",
           "pattern_from_params", "pattern_names", "register"]
