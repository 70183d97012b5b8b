"""The accuracy profile: dev and test accuracy vs sparsity for one pattern, at every
precision (design.md §9).

The grid is the dense model (sparsity 0.0, the full dense fine-tune: the reference of every
budget) and sparsities 0.5, 0.7, 0.8, 0.9, 0.95, each point pruned and fine-tuned from the
previous one on the budget (:func:`fitformer.sparsity.prune.prune`, cached by run key).
Points are trained lazily: :meth:`Profile.point` trains the chain up to the point asked
for, so a query that needs only low sparsities trains only those; an interrupted chain
resumes from its finished runs (and the run in progress from its checkpoint).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fitformer.errors import FitformerError

GRID = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95)
PRECISIONS = ("fp32", "fx16", "fx8")


@dataclass(frozen=True)
class ProfilePoint:
    """One grid point.

    Attributes:
        sparsity: requested sparsity (0.0 = the dense fine-tune).
        achieved_sparsity: over the prunable matrices.
        hp_split: ``{"d1", "d2"}`` requested (HP) or ``None``.
        accuracy: ``{"dev": {"fp32", "fx16", "fx8"}, "test": {...}}`` (fractions 0-1; for
            translation greedy BLEU 0-100, ``metrics.json``'s ``"bleu"``).
        run_dir: the run directory.
        majority_rate: the dev split's majority-class rate (classification), if recorded.
        collapsed: per precision, why the run counts as collapsed (the majority-class rule,
            :func:`fitformer.training.evaluation.collapse_reason`), or ``None``.
    """

    sparsity: float
    achieved_sparsity: float
    hp_split: dict | None
    accuracy: dict
    run_dir: Path
    majority_rate: float | None = None
    collapsed: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"sparsity": self.sparsity, "achieved_sparsity": self.achieved_sparsity,
                "hp_split": self.hp_split, "accuracy": self.accuracy,
                "majority_rate_dev": self.majority_rate, "collapsed": self.collapsed,
                "run_dir": str(self.run_dir)}

    @classmethod
    def from_metrics(cls, sparsity: float, metrics: dict, scores: dict, run_dir: Path
                     ) -> ProfilePoint:
        """A point from a run's ``metrics.json``; the majority-class rule is applied to
        runs that recorded predictions or the majority rate."""
        from fitformer.training.evaluation import collapse_reason

        maj = (metrics.get("majority_rate") or {}).get("dev")
        classes = (metrics.get("predicted_classes") or {}).get("dev", {})
        collapsed = {}
        if metrics.get("task", "classification") == "classification":
            collapsed = {p: collapse_reason(a, maj, classes.get(p))
                         for p, a in metrics["accuracy"]["dev"].items()}
        achieved = metrics.get("sparsity", {}).get("overall", sparsity)
        return cls(sparsity, achieved, metrics.get("hp_split"), scores, run_dir, maj,
                   collapsed)


@dataclass
class Profile:
    """A lazily trained accuracy profile (module docstring).

    Attributes:
        model, dataset: as for :func:`fitformer.sparsity.prune.prune`.
        pattern, level2_density, block, banks: the pruning pattern.
        budget: ``tiny``, ``quick`` or ``default``.
        dense_dir: the dense run (default: the full dense fine-tune, created if missing;
            for translation the from-scratch model trained on the default budget).
        log: progress lines.
        task: ``classification`` or ``translation``.
    """

    model: str = "default"
    dataset: str = "rotten-tomatoes"
    pattern: str = "hp"
    level2_density: float | None = None
    block: tuple[int, int] = (16, 16)
    banks: int = 4
    budget: str = "default"
    dense_dir: Path | None = None
    log: Callable[[str], None] = print
    task: str = "classification"
    _points: dict[float, ProfilePoint] = field(default_factory=dict)

    def _scores(self, metrics: dict) -> dict:
        return metrics["bleu"] if self.task == "translation" else metrics["accuracy"]

    def _spec(self, sparsity: float):
        from fitformer.sparsity.prune import PruneSpec

        return PruneSpec(pattern=self.pattern, sparsity=sparsity, block=self.block,
                         banks=self.banks, level2_density=self.level2_density)

    def check(self) -> None:
        """Validate the pattern parameters before any work.

        Raises:
            FitformerError: bad pattern, block, banks, split, or budget.
        """
        from fitformer.training.budgets import get_budget

        get_budget(self.budget)
        pat = self._spec(GRID[-1]).make_pattern()
        for s in GRID[1:]:
            pat.plan((384, 384), s)

    def dense(self) -> ProfilePoint:
        """The dense point (trained if missing: the full dense fine-tune)."""
        if 0.0 not in self._points:
            from fitformer.training.finetune import finetune
            from fitformer.training.runs import load_run_info

            if self.dense_dir is None:
                self.log("dense reference fine-tune (read from the cache; trained first if "
                         "missing) ...")
                self.dense_dir = finetune(self.model, self.dataset, budget="default",
                                          task=self.task).path
            _, metrics = load_run_info(Path(self.dense_dir))
            self._points[0.0] = ProfilePoint.from_metrics(0.0, metrics, self._scores(metrics),
                                                          Path(self.dense_dir))
        return self._points[0.0]

    def point(self, sparsity: float, *, train: bool = True) -> ProfilePoint | None:
        """The grid point at ``sparsity``, training the chain up to it when ``train``;
        ``None`` when not trained and ``train`` is false.

        Raises:
            FitformerError: ``sparsity`` not on the grid.
        """
        from fitformer.sparsity.prune import prune

        if not any(abs(sparsity - g) < 1e-9 for g in GRID):
            raise FitformerError(f"sparsity {sparsity} is not on the grid {list(GRID)}.")
        if sparsity == 0.0:
            return self.dense()
        if sparsity in self._points:
            return self._points[sparsity]
        previous = self.dense().run_dir
        for s in GRID[1:]:
            if s > sparsity + 1e-9:
                break
            if s in self._points:
                previous = self._points[s].run_dir
                continue
            kwargs = dict(spec=self._spec(s), from_dir=previous, budget=self.budget,
                          task=self.task)
            # The source run decides the model (prune refuses --model with --from).
            result = prune("default", self.dataset, cached_only=True, **kwargs)
            if result is None:
                if not train:
                    return None
                self.log(f"pruning and fine-tuning {self.pattern} at sparsity {s:g} "
                         f"({self.budget} budget) ...")
                result = prune("default", self.dataset, **kwargs)
            m = result.metrics
            self._points[s] = ProfilePoint.from_metrics(s, m, self._scores(m), result.path)
            previous = result.path
        return self._points[sparsity]

    def known(self) -> list[ProfilePoint]:
        """Every grid point trained so far (cached ones included), by sparsity."""
        self.dense()
        for s in GRID[1:]:
            if self.point(s, train=False) is None:
                break
        return [self._points[s] for s in sorted(self._points)]

    def compute(self) -> list[ProfilePoint]:
        """Every grid point (trains what is missing)."""
        self.point(GRID[-1])
        return self.known()
