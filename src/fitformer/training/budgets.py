"""Named compute budgets, defined once (design.md §9).

- ``tiny``: for tests, a few hundred real sentences and a few optimiser steps.
- ``quick``: 2,000 train / 500 dev sentences, about 60 steps per pruning point; a smoke run,
  labelled so in every report.
- ``default``: the full training split; the dense fine-tune is the reference recipe and each
  pruning point trains one epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

from fitformer.errors import FitformerError


@dataclass(frozen=True)
class Budget:
    """How much data and how many steps a run may use.

    Attributes:
        name: ``tiny``, ``quick`` or ``default``.
        train_examples, dev_examples, test_examples: caps on each split (``None``: all).
            Splits are already in random order, so a cap takes a random stratified-ish
            prefix that is the same for every run.
        dense_epochs: epochs of the dense fine-tune under this budget.
        steps_per_point: optimiser steps per sparsity point when pruning (``None``: one
            epoch of the capped training split).
        smoke: results are a smoke test, not a measurement; reports say so.
    """

    name: str
    train_examples: int | None
    dev_examples: int | None
    test_examples: int | None
    dense_epochs: float
    steps_per_point: int | None
    smoke: bool


BUDGETS: dict[str, Budget] = {
    b.name: b
    for b in (
        Budget("tiny", 320, 160, 160, dense_epochs=3, steps_per_point=8, smoke=True),
        Budget("quick", 2000, 500, None, dense_epochs=3, steps_per_point=60, smoke=True),
        Budget("default", None, None, None, dense_epochs=3, steps_per_point=None,
               smoke=False),
    )
}


def get_budget(name: str) -> Budget:
    """The budget called ``name``.

    Raises:
        FitformerError: unknown name.
    """
    try:
        return BUDGETS[name]
    except KeyError:
        raise FitformerError(
            f"unknown budget {name!r}; choose from {', '.join(BUDGETS)}."
        ) from None
