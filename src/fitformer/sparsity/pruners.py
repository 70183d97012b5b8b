"""Pruners: when and how masks are computed during fine-tuning.

- :class:`GradualMagnitudePruner` (default): gradual magnitude pruning on the cubic schedule
  of Zhu & Gupta (2017); each level of the pattern has its own slice of the pruning window
  (HP: level 1 in the first half, level 2 in the second; design.md §3). Masks are updated
  every ``update_every`` steps, only ever shrink, and the last update of the window reaches
  the final level densities exactly; training continues with the final masks after it.
- :class:`ADMMPruner`: alternating direction method of multipliers (Zhang et al., "A
  Systematic DNN Weight Pruning Framework using ADMM", ECCV 2018): the loss gains
  ``rho / 2 * ||W - Z + U||^2``; every ``update_every`` steps ``Z`` is the projection of
  ``W + U`` on the pattern and ``U += W - Z``; at the end of the window the weights are
  hard-pruned to the pattern and fine-tuned with fixed masks (masked retraining).

Both are :class:`~fitformer.training.loop.TrainHook` objects, so the same training loop
runs dense and sparse fine-tunes. Masks live in parametrizations
(:mod:`fitformer.sparsity.masking`).
"""

from __future__ import annotations

import math

import torch

from fitformer.sparsity.masking import attach_masks, current_masks, original_weight
from fitformer.sparsity.patterns import Pattern
from fitformer.sparsity.schedule import level_densities
from fitformer.training.loop import TrainHook

PRUNERS = ("gradual", "admm")


class _PrunerBase(TrainHook):
    def __init__(self, pattern: Pattern, final_levels: dict[str, tuple[float, ...]], *,
                 initial_masks: dict[str, torch.Tensor] | None = None,
                 initial_levels: dict[str, tuple[float, ...]] | None = None,
                 window: float = 2 / 3, update_every: int | None = None):
        """
        Args:
            pattern: the sparsity pattern.
            final_levels: module name -> final level densities (``pattern.plan``).
            initial_masks: masks to start from (a previous, less sparse point); default all
                kept.
            initial_levels: level densities of ``initial_masks``; default all 1.0.
            window: fraction of the steps during which masks change (then fixed).
            update_every: steps between mask updates (default: about 20 updates).
        """
        self.pattern = pattern
        self.final_levels = dict(final_levels)
        n = pattern.n_levels
        self.initial_levels = {k: tuple((initial_levels or {}).get(k, (1.0,) * n))
                               for k in final_levels}
        self.masks: dict[str, torch.Tensor] = dict(initial_masks or {})
        self.window = window
        self.update_every = update_every
        self.window_steps = 1
        self.levels = dict(self.initial_levels)

    def _plan_window(self, total_steps: int) -> None:
        self.window_steps = max(1, math.floor(self.window * total_steps))
        if self.update_every is None:
            self.update_every = max(1, self.window_steps // 20)

    def _ensure_masks(self, model: torch.nn.Module) -> None:
        for name in self.final_levels:
            if name not in self.masks:
                w = model.get_submodule(name).weight
                self.masks[name] = torch.ones_like(w, dtype=torch.bool)
        attach_masks(model, self.masks)

    def _update_masks(self, model: torch.nn.Module, levels_of) -> None:
        with torch.no_grad():
            for name, final in self.final_levels.items():
                levels = levels_of(name, final)
                w = original_weight(model.get_submodule(name))
                prev = self.masks[name]
                self.masks[name] = self.pattern.mask_from_levels(w * prev, levels, prev)
                self.levels[name] = levels
        attach_masks(model, self.masks)

    def state_dict(self) -> dict:
        return {"masks": dict(self.masks),
                "levels": {k: list(v) for k, v in self.levels.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.masks = dict(state["masks"])
        self.levels = {k: tuple(v) for k, v in state["levels"].items()}


class GradualMagnitudePruner(_PrunerBase):
    """Gradual magnitude pruning with the cubic schedule (see module docstring)."""

    def on_train_begin(self, model, total_steps):
        self._plan_window(total_steps)
        self._ensure_masks(model)

    def on_step_end(self, model, step, total_steps):
        if step > self.window_steps:
            return
        if step % self.update_every and step != self.window_steps:
            return
        t = step / self.window_steps
        self._update_masks(model, lambda name, final: level_densities(
            self.initial_levels[name], final, t))


class ADMMPruner(_PrunerBase):
    """ADMM pruning (Zhang et al. 2018), then masked retraining (see module docstring).

    ``rho`` starts at ``rho`` and is multiplied by ``rho_growth`` at every ``Z`` update, up
    to ``rho_max`` (progressive penalty, as in Zhang et al.'s follow-up ADMM-NN, ASPLOS
    2019); the values are assumed, not tuned.
    """

    def __init__(self, *args, rho: float = 1e-3, rho_growth: float = 1.3,
                 rho_max: float = 1e-1, **kwargs):
        super().__init__(*args, **kwargs)
        self.rho0, self.rho_growth, self.rho_max = rho, rho_growth, rho_max
        self.rho = rho
        self.Z: dict[str, torch.Tensor] = {}
        self.U: dict[str, torch.Tensor] = {}
        self.hard_pruned = False

    def _project(self, name: str, w: torch.Tensor) -> torch.Tensor:
        prev = self.masks.get(name)
        mask = self.pattern.mask_from_levels(w, self.final_levels[name], prev)
        return w * mask

    def on_train_begin(self, model, total_steps):
        self._plan_window(total_steps)
        if self.hard_pruned:  # resumed after the hard prune
            attach_masks(model, self.masks)
            return
        if self.masks:  # start from a previous point's masks
            attach_masks(model, self.masks)
        with torch.no_grad():
            for name in self.final_levels:
                w = original_weight(model.get_submodule(name)).detach()
                if name not in self.Z:
                    self.Z[name] = self._project(name, w)
                    self.U[name] = torch.zeros_like(w)

    def before_optimizer_step(self, model, step, total_steps):
        if self.hard_pruned or step > self.window_steps:
            return
        for name in self.final_levels:
            w = original_weight(model.get_submodule(name))
            if w.grad is not None:
                w.grad.add_(self.rho * (w.detach() - self.Z[name] + self.U[name]))

    def on_step_end(self, model, step, total_steps):
        if self.hard_pruned:
            return
        with torch.no_grad():
            if step < self.window_steps and step % self.update_every == 0:
                for name in self.final_levels:
                    w = original_weight(model.get_submodule(name)).detach()
                    self.Z[name] = self._project(name, w + self.U[name])
                    self.U[name] += w - self.Z[name]
                self.rho = min(self.rho_max, self.rho * self.rho_growth)
            if step >= self.window_steps:
                self._ensure_masks(model)
                self._update_masks(model, lambda name, final: final)
                self.hard_pruned = True
                self.Z.clear()
                self.U.clear()

    def state_dict(self):
        return {**super().state_dict(), "Z": dict(self.Z), "U": dict(self.U),
                "rho": self.rho, "hard_pruned": self.hard_pruned}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.Z, self.U = dict(state["Z"]), dict(state["U"])
        self.rho, self.hard_pruned = float(state["rho"]), bool(state["hard_pruned"])


def make_pruner(name: str, pattern: Pattern, final_levels, **kwargs) -> _PrunerBase:
    """``gradual`` (default) or ``admm``."""
    from fitformer.errors import FitformerError

    if name == "gradual":
        return GradualMagnitudePruner(pattern, final_levels, **kwargs)
    if name == "admm":
        return ADMMPruner(pattern, final_levels, **kwargs)
    raise FitformerError(f"unknown pruner {name!r}; choose from {', '.join(PRUNERS)}.")


__all__ = ["ADMMPruner", "GradualMagnitudePruner", "PRUNERS", "current_masks", "make_pruner"]
