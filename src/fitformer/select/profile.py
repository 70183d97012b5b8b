"""The accuracy profile: dev and test accuracy vs sparsity for one pattern, at every
precision (design.md §9).

The score is the run's dev/test accuracy, or macro-F1 with ``metric="macro_f1"`` (for
imbalanced data; filled into a cached run's ``metrics.json`` when missing, see
:func:`fitformer.training.finetune.complete_macro_f1`), or greedy BLEU for translation.

The grid is the dense model (sparsity 0.0, the dense fine-tune of the same budget, or a
dense run the user names) and sparsities 0.5, 0.7, 0.8, 0.9, 0.95, each point pruned and
fine-tuned from the previous one on the budget (:func:`fitformer.sparsity.prune.prune`,
cached by run key).
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
#: The profile's pruning recipe for classification on the default budget: each point
#: distils the dense teacher's logits (Hinton et al. 2015; T = 2, alpha = 0.9), chained
#: through the grid (docs/pruning-recipe.md compares it with the chain without it).
PROFILE_DISTILL = ("logits", 2.0, 0.9)
#: Peak learning rate of the distilled profile points: 2e-4 (docs/pruning-recipe.md, chain
#: + logit KD, 1 epoch: HP dev 0.784 at 0.9 and 0.788 at 0.95 against 0.682 and 0.594 at
#: the recipe's 5e-5, measured 2026-12-01). The smoke budgets keep the recipe's default.
PROFILE_LEARNING_RATE = 2e-4
#: select's and profile's level-1 block for HP on classification: 1 x 16 (one row per block,
#: 16-column stripes). At the profile's recipe it keeps dev 0.805 / 0.799 at sparsity 0.7 /
#: 0.8 against 0.786 / 0.783 with 16 x 16, and at the augmented recipe 0.817 against 0.791
#: (docs/pruning-recipe.md, measured 2026-12-01); column and bank balance are unchanged, the
#: cost is index storage (block-row indices per row segment). Other patterns, and
#: translation (not measured), keep design.md §3's 16 x 16.
SELECT_HP_BLOCK = (1, 16)
DEFAULT_BLOCK = (16, 16)


def default_block(pattern: str, task: str = "classification") -> tuple[int, int]:
    """The block select and profile use when ``--block`` is not given:
    :data:`SELECT_HP_BLOCK` for HP on classification, else design.md §3's 16 x 16."""
    return SELECT_HP_BLOCK if pattern == "hp" and task == "classification" else DEFAULT_BLOCK


#: The fewest dev sentences select and profile accept: with fewer, one sentence moves dev
#: accuracy by more than 0.05 (the default AC drop), and a split of one sentence has a
#: majority-class rate of 1.0 that no floor can beat.
MIN_DEV_SENTENCES = 20
#: The metrics AC can apply to for classification (:data:`fitformer.training.evaluation.METRICS`).
CLASSIFICATION_METRICS = ("accuracy", "macro_f1")


@dataclass(frozen=True)
class ProfilePoint:
    """One grid point.

    Attributes:
        sparsity: requested sparsity (0.0 = the dense fine-tune).
        achieved_sparsity: over the prunable matrices.
        hp_split: ``{"d1", "d2"}`` requested (HP) or ``None``.
        accuracy: ``{"dev": {"fp32", "fx16", "fx8"}, "test": {...}}``, the profile's
            metric: accuracy or macro-F1 (fractions 0-1), or for translation greedy BLEU
            0-100 (``metrics.json``'s ``"bleu"``).
        run_dir: the run directory.
        majority_rate: the dev split's majority-class rate (classification), if recorded.
        collapsed: per precision, why the run counts as collapsed (the majority-class rule,
            :func:`fitformer.training.evaluation.collapse_reason`, in the metric), or
            ``None``.
        majority_baseline: the metric's score of always answering the dev split's most
            frequent class (the majority rate for accuracy), if recorded.
    """

    sparsity: float
    achieved_sparsity: float
    hp_split: dict | None
    accuracy: dict
    run_dir: Path
    majority_rate: float | None = None
    collapsed: dict = field(default_factory=dict)
    majority_baseline: float | None = None

    def as_dict(self) -> dict:
        return {"sparsity": self.sparsity, "achieved_sparsity": self.achieved_sparsity,
                "hp_split": self.hp_split, "accuracy": self.accuracy,
                "majority_rate_dev": self.majority_rate,
                "majority_baseline_dev": self.majority_baseline, "collapsed": self.collapsed,
                "run_dir": str(self.run_dir)}

    @classmethod
    def from_metrics(cls, sparsity: float, metrics: dict, scores: dict, run_dir: Path,
                     metric: str = "accuracy") -> ProfilePoint:
        """A point from a run's ``metrics.json`` and its ``scores`` in ``metric``
        (``accuracy`` or ``macro_f1``); the majority-class rule is applied, in that metric,
        to runs that recorded predictions or the majority baseline."""
        from fitformer.training.evaluation import METRICS, collapse_reason

        maj = (metrics.get("majority_rate") or {}).get("dev")
        base = (metrics.get(METRICS[metric][1]) or {}).get("dev") if metric in METRICS \
            else None
        classes = (metrics.get("predicted_classes") or {}).get("dev", {})
        collapsed = {}
        if metrics.get("task", "classification") == "classification":
            collapsed = {p: collapse_reason(a, base, classes.get(p), metric)
                         for p, a in scores["dev"].items()}
        achieved = metrics.get("sparsity", {}).get("overall", sparsity)
        return cls(sparsity, achieved, metrics.get("hp_split"), scores, run_dir, maj,
                   collapsed, base)


#: Seconds per optimiser step (batch 32, 64 tokens, MiniLM-L6 on 2 cores) and per run outside
#: training (evaluation at three precisions, saving) when no cached run says otherwise:
#: measured here, 2026-11-30, AMD EPYC 2 cores idle (a pruning point with logit distillation,
#: 336 steps in 420 s; README: dense fine-tune 27.7 train sentences/s).
FALLBACK_STEP_S = 1.25
FALLBACK_RUN_OVERHEAD_S = 60.0
#: The same for translation (batch 128 pairs, the 3+3 x 256 encoder-decoder on 2 cores):
#: README, 2026-11-30: the default dense run, 2,752 steps, about 0.95 s per step alone, plus
#: 70 s of evaluation (greedy and 4-beam BLEU).
TRANSLATION_FALLBACK_STEP_S = 0.95
TRANSLATION_FALLBACK_RUN_OVERHEAD_S = 70.0
#: How many of the newest cached runs set the rates.
RATE_RUNS = 8


def step_seconds(task: str = "classification") -> tuple[float, float, str]:
    """``(seconds per step, seconds per run outside training, source)``: medians over the
    runs of ``task`` in the run cache (``train_time_s / steps`` and
    ``wall_time_s - train_time_s`` of ``metrics.json``) of the :data:`RATE_RUNS` newest
    cached runs (measured on the machine that trained them), else
    :data:`FALLBACK_STEP_S` / :data:`FALLBACK_RUN_OVERHEAD_S` (translation:
    :data:`TRANSLATION_FALLBACK_STEP_S` / :data:`TRANSLATION_FALLBACK_RUN_OVERHEAD_S`).
    Translation counts only ``default``-budget runs: a smoke run's sentences are shorter
    (its steps about 4x cheaper), and every translation query trains on ``default`` data
    first (the dense reference)."""
    import json
    import statistics

    from fitformer.paths import runs_dir

    per_step, overhead = [], []
    root = runs_dir()
    found = sorted(root.glob("*/metrics.json"), key=lambda f: f.stat().st_mtime) \
        if root.is_dir() else []
    for m in found[-RATE_RUNS:]:
        try:
            d = json.loads(m.read_text())
            if d.get("task", "classification") != task or not d.get("steps"):
                continue
            if task == "translation" and d.get("budget") != "default":
                continue
            # train_time_s covers the steps run in the last process only (a resumed run's
            # earlier steps were timed by the process before it).
            ran = d["steps"] - int(d.get("resumed_from_step") or 0)
            if ran <= 0:
                continue
            per_step.append(d["train_time_s"] / ran)
            overhead.append(max(0.0, d["wall_time_s"] - d["train_time_s"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    if not per_step:
        if task == "translation":
            return (TRANSLATION_FALLBACK_STEP_S, TRANSLATION_FALLBACK_RUN_OVERHEAD_S,
                    "the README's 2-core translation run (no cached one)")
        return FALLBACK_STEP_S, FALLBACK_RUN_OVERHEAD_S, "a 2-core default (no cached runs)"
    return (statistics.median(per_step), statistics.median(overhead),
            f"the medians of {len(per_step)} cached run(s)")


def _minutes_text(minutes: float) -> str:
    """``"7 min"``, or ``"<1 min"`` below half a minute (not ``"0 min"``)."""
    return "<1 min" if minutes < 0.5 else f"{minutes:.0f} min"


@dataclass(frozen=True)
class PlanItem:
    """One run of a :class:`Plan`: ``what`` (label), grid ``sparsity``, whether it is
    ``cached``, its optimiser ``steps``, and ``saved_steps``, those its checkpoint from an
    interrupted run already holds (resumed, not trained again)."""

    what: str
    sparsity: float
    cached: bool
    steps: int
    saved_steps: int = 0

    @property
    def steps_left(self) -> int:
        return max(0, self.steps - self.saved_steps)


@dataclass(frozen=True)
class Plan:
    """What a query trains (:meth:`Profile.plan`), with time estimates in minutes."""

    items: list[PlanItem]
    step_s: float
    run_overhead_s: float
    rate_source: str

    def minutes(self, item: PlanItem) -> float:
        return 0.0 if item.cached else (item.steps_left * self.step_s
                                        + self.run_overhead_s) / 60

    @property
    def to_train(self) -> list[PlanItem]:
        return [i for i in self.items if not i.cached]

    def text(self, upto_note: str = "") -> str:
        """One line: what is cached, what may be trained, the estimated minutes."""
        cached = [i.what for i in self.items if i.cached]
        todo = self.to_train
        if not todo:
            return f"plan: everything is cached ({', '.join(cached)}); nothing to train."
        parts = [f"{i.what} {i.steps} steps"
                 + (f" ({min(i.saved_steps, i.steps)} saved by an interrupted run)"
                    if i.saved_steps else "") + f" ~{_minutes_text(self.minutes(i))}"
                 for i in todo]
        total = sum(self.minutes(i) for i in todo)
        return (f"plan: cached: {', '.join(cached) or 'nothing'}; to train{upto_note}: "
                + "; ".join(parts) + f"; at most ~{_minutes_text(total)} in all (rates from "
                f"{self.rate_source}).")


@dataclass
class Profile:
    """A lazily trained accuracy profile (module docstring).

    Attributes:
        model, dataset: as for :func:`fitformer.sparsity.prune.prune`.
        pattern, level2_density, block, banks, nm_m: the pruning pattern (``nm_m``:
            the m of N:M; the grid's 0.95 needs m >= 20).
        budget: ``tiny``, ``quick`` or ``default``.
        dense_dir: the dense run (default: the dense fine-tune of ``budget``, created if
            missing; for translation the from-scratch model trained on the default budget).
        text_column, label_column: columns of a local dataset file.
        log: progress lines.
        task: ``classification`` or ``translation``.
        metric: what AC applies to for classification: ``accuracy`` or ``macro_f1``
            (translation: BLEU, whatever this says).
        distill: ``(mode, temperature, alpha)`` of the distillation from the dense run
            (classification only; ``("none", 2.0, 0.5)`` turns it off).
    """

    model: str = "default"
    dataset: str = "rotten-tomatoes"
    pattern: str = "hp"
    level2_density: float | None = None
    block: tuple[int, int] | None = None      # None: default_block(pattern, task)
    banks: int = 4
    nm_m: int | None = None                  # None: 4 (--nm-m is for --pattern nm)
    budget: str = "default"
    dense_dir: Path | None = None
    log: Callable[[str], None] = print
    task: str = "classification"
    distill: tuple[str, float, float] = PROFILE_DISTILL
    text_column: str = "text"
    label_column: str = "label"
    metric: str = "accuracy"
    from_dense: bool = False
    _points: dict[float, ProfilePoint] = field(default_factory=dict)
    _uncached: dict = field(default_factory=dict)     # grid point -> runs.Uncached

    def __post_init__(self):
        #: The dense run was named by the user (``--dense``), not the budget's own.
        self.dense_given = self.dense_dir is not None
        #: ``block`` was named by the user (``--block``), not the pattern's default.
        self.block_given = self.block is not None
        if self.block is None:
            self.block = default_block(self.pattern, self.task)
        #: ``nm_m`` was named by the user (``--nm-m``), not N:M's default 4.
        self.nm_m_given = self.nm_m is not None
        if self.nm_m is None:
            self.nm_m = 4

    @property
    def metric_name(self) -> str:
        """``bleu`` for translation, else :attr:`metric`."""
        return "bleu" if self.task == "translation" else self.metric

    def _point_from(self, sparsity: float, metrics: dict, run_dir: Path) -> ProfilePoint:
        """The grid point of a finished run, scored in :attr:`metric_name` (macro-F1 filled
        into a run's ``metrics.json`` when missing)."""
        if self.task == "translation":
            return ProfilePoint.from_metrics(sparsity, metrics, metrics["bleu"], run_dir,
                                             "bleu")
        if self.metric == "macro_f1":
            from fitformer.data import load_dataset
            from fitformer.training.finetune import complete_macro_f1

            data = load_dataset(self.dataset, task=self.task, **self._columns())
            metrics = complete_macro_f1(Path(run_dir), metrics, data)
        return ProfilePoint.from_metrics(sparsity, metrics, metrics[self.metric], run_dir,
                                         self.metric)

    def _spec(self, sparsity: float):
        from fitformer.sparsity.prune import PruneSpec

        return PruneSpec(pattern=self.pattern, sparsity=sparsity, block=self.block,
                         banks=self.banks, level2_density=self.level2_density,
                         nm_m=self.nm_m)

    @property
    def dense_budget(self) -> str:
        """The budget of the dense reference: the profile's own (design.md §9: each budget
        has its own dense reference, the smoke ones of their size); translation keeps the
        from-scratch model of the ``default`` budget (a smaller one does not translate)."""
        return "default" if self.task == "translation" else self.budget

    def _columns(self) -> dict:
        return ({} if self.task == "translation" else
                {"text_column": self.text_column, "label_column": self.label_column})

    def _distill(self):
        """The distillation of the pruned points: :data:`PROFILE_DISTILL` on the full
        (``default``) budget; none on the smoke budgets, whose dense teachers are barely above
        the majority class (tiny: dev 0.644 against 0.6375), so distilling from them made
        the tiny HP 0.5 point answer one class only (measured 2026-11-30)."""
        from fitformer.training.budgets import get_budget
        from fitformer.training.loop import DistillConfig

        if self.task != "classification" or get_budget(self.budget).smoke:
            return None
        return DistillConfig(*self.distill)

    def _learning_rate(self) -> float | None:
        """:data:`PROFILE_LEARNING_RATE` where the points distil (:meth:`_distill`), else
        ``None`` (the pruning recipe's default)."""
        return None if self._distill() is None else PROFILE_LEARNING_RATE

    def check(self) -> None:
        """Validate the metric, the pattern parameters and a named dense run's task before
        any work (without loading the dataset: :meth:`check_data` does that).

        Raises:
            FitformerError: a metric that does not fit the task, a bad pattern, block
                (also a ``--block`` named for a pattern without blocks), banks, split or
                budget, ``--model`` together with ``--dense``, or a
                ``--dense`` run of the other task.
        """
        from fitformer.sparsity.patterns.registry import make_pattern, pattern_names
        from fitformer.training.budgets import get_budget

        if self.task == "translation" and self.metric != "accuracy":
            raise FitformerError(f"--metric {self.metric} is for classification; "
                                 "--task translation measures dev BLEU (--min-bleu / "
                                 "--max-bleu-drop): drop --metric.")
        if self.task == "classification" and self.metric not in CLASSIFICATION_METRICS:
            raise FitformerError(f"--metric {self.metric}: choose "
                                 f"{' or '.join(CLASSIFICATION_METRICS)}.")
        get_budget(self.budget)
        self._distill()
        pat = self._spec(GRID[-1]).make_pattern()
        if self.level2_density is not None and "level2_density" not in pat.params():
            raise FitformerError(f"--level2-density {self.level2_density:g} is HP's split; "
                                 f"--pattern {self.pattern} has none: drop it.")
        if pat.has_blocks:
            from fitformer.hardware.workload import check_block_banks

            # The hardware model's check (select's estimates), before any work.
            check_block_banks(tuple(self.block), self.banks)
        from fitformer.sparsity.patterns.nm import check_nm_m_given

        check_nm_m_given(self.nm_m if self.nm_m_given else None, self.pattern)
        if self.block_given and not pat.has_blocks:
            blocked = [n for n in pattern_names()
                       if make_pattern(n).has_blocks]
            raise FitformerError(f"--block {'x'.join(map(str, self.block))}: --pattern "
                                 f"{self.pattern} has no blocks; drop --block, or choose a "
                                 f"pattern with blocks ({', '.join(blocked)}).")
        for s in GRID[1:]:
            pat.plan((384, 384), s)
        if self.dense_given:
            self._check_dense_run()
        self._check_block_fits(pat)

    def _check_block_fits(self, pat) -> None:
        """A block that does not fit the model's prunable matrices (or empties one at a
        grid point) is refused now, not after devices were evaluated or points trained.
        Classification only; a model whose config cannot be read here is left to the
        training to report."""
        from fitformer.hardware.frontends import load_dims
        from fitformer.sparsity.patterns.base import check_not_emptied

        if self.task != "classification" or self.pattern == "unstructured":
            return
        try:
            dims, _ = load_dims(str(self.dense_dir) if self.dense_given else self.model)
        except FitformerError:
            return
        H, ffn = dims.hidden, dims.intermediate
        shapes = {"q, k, v, attn_out": (H, H), "ffn_in": (ffn, H), "ffn_out": (H, ffn)}
        for role, shape in shapes.items():
            pat.check_shape(role, shape)
        r, c = self.block
        rows, cols = min(M for M, _ in shapes.values()), min(N for _, N in shapes.values())
        if r > rows or c > cols:
            raise FitformerError(f"--block {r}x{c} is larger than the model's smallest "
                                 f"prunable matrix ({rows}x{cols}); choose a block of at most "
                                 f"{rows} rows and {cols} columns (default "
                                 f"{'x'.join(map(str, default_block(self.pattern)))}).")
        for s in GRID[1:]:
            for role, shape in shapes.items():
                try:
                    check_not_emptied(pat, role, shape, pat.plan(shape, s), s)
                except FitformerError:
                    raise FitformerError(
                        f"--block {r}x{c}: {self.pattern} at the profile's sparsity {s:g} "
                        f"keeps nothing of {role} ({shape[0]}x{shape[1]}); choose a smaller "
                        "--block.") from None

    def _dense_run(self) -> dict:
        """The ``run.json`` (run key) of the ``--dense`` run."""
        from fitformer.training.runs import read_json

        return read_json(Path(self.dense_dir) / "run.json",
                         "give a run directory made by `fitformer finetune`")

    def _check_dense_run(self) -> None:
        """``--dense``: no ``--model`` beside it (the run decides the model, as ``prune
        --from`` does), and a run of this task."""
        d = self.dense_dir
        if self.model != "default":
            raise FitformerError(f"--model {self.model} and --dense {d} both given: the run "
                                 "in --dense decides the model; drop --model.")
        run = self._dense_run()
        task = run.get("task", "classification")
        if task != self.task:
            raise FitformerError(
                f"--dense {d} is a {task} run (trained on {run.get('dataset')!r}); with "
                f"--task {self.task} give a {self.task} run (made by `fitformer finetune "
                f"--task {self.task}`), or drop --dense.")

    def check_data(self) -> None:
        """Validate what needs the dataset, before any training: a ``--dense`` run trained
        on this dataset and split, and a dev split (capped by the budget) of at least
        :data:`MIN_DEV_SENTENCES` sentences and two classes.

        Raises:
            FitformerError: the dataset cannot be loaded, the ``--dense`` run was trained
                on other data, or the dev split is too small to decide on.
        """
        from fitformer.data import load_dataset
        from fitformer.training.budgets import get_budget

        data = load_dataset(self.dataset, task=self.task, **self._columns())
        if self.dense_given:
            run = self._dense_run()
            if run.get("dataset") != data.name or run.get("data_split") != data.data_split:
                raise FitformerError(
                    f"--dense {self.dense_dir} was trained on {run.get('dataset')!r}, not "
                    f"{data.name!r} (or with another split); give the --dataset it was "
                    f"trained on, a dense run fine-tuned on {data.name!r}, or drop --dense.")
        if self.task != "classification":
            return
        dev = data.dev.subset(get_budget(self.budget).dev_examples)
        classes = len(set(dev.labels))
        if len(dev) < MIN_DEV_SENTENCES or classes < 2:
            n_all = len(data.train) + len(data.dev) + len(data.test)
            raise FitformerError(
                f"--dataset {self.dataset}: its dev split has {len(dev)} sentence"
                f"{'' if len(dev) == 1 else 's'} of {classes} class"
                f"{'' if classes == 1 else 'es'} ({n_all} usable rows in all); select and "
                "profile decide on dev scores and need at least "
                f"{MIN_DEV_SENTENCES} dev sentences of two or more classes. Give a larger "
                f"file (a file without a split column puts min(1000, n // 10) rows in dev: "
                f"{10 * MIN_DEV_SENTENCES} rows or more) or a 'split' column with at least "
                f"{MIN_DEV_SENTENCES} 'dev' rows.")

    def dense(self) -> ProfilePoint:
        """The dense point (trained if missing: the full dense fine-tune)."""
        if 0.0 not in self._points:
            from fitformer.training.finetune import finetune
            from fitformer.training.runs import load_run_info

            if self.dense_dir is None:
                self.log(f"dense reference fine-tune ({self.dense_budget} budget; read from "
                         "the cache, trained first if missing) ...")
                self.dense_dir = finetune(self.model, self.dataset, budget=self.dense_budget,
                                          task=self.task, **self._columns()).path
            _, metrics = load_run_info(Path(self.dense_dir))
            self._points[0.0] = self._point_from(0.0, metrics, Path(self.dense_dir))
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
            kwargs = dict(spec=self._spec(s),
                          from_dir=self.dense().run_dir if self.from_dense else previous,
                          budget=self.budget,
                          task=self.task, distill=self._distill(),
                          learning_rate=self._learning_rate(), **self._columns())
            # The source run decides the model (prune refuses --model with --from).
            result = prune("default", self.dataset, cached_only=True, **kwargs)
            if not result:
                if not train:
                    self._uncached[s] = result     # its key: the plan reads its checkpoint
                    return None
                self.log(f"pruning and fine-tuning {self.pattern} at sparsity {s:g} "
                         f"({self.budget} budget) ...")
                result = prune("default", self.dataset, **kwargs)
            self._points[s] = self._point_from(s, result.metrics, result.path)
            previous = result.path
        return self._points[sparsity]

    def chains(self):
        """The profile's points as chains of :mod:`fitformer.sparsity.chains` (one chain
        through the grid, or one chain per point with :attr:`from_dense`), to run them with
        :func:`fitformer.sparsity.executors.run_chains` (e.g. on Ray); :meth:`compute`
        then reads them from the cache."""
        from fitformer.sparsity.chains import Chain, DenseJob, PointJob, split_from_dense

        cols = self._columns()
        dense = (DenseJob(dense_dir=str(self.dense_dir)) if self.dense_given else
                 DenseJob(model=self.model, dataset=self.dataset, budget=self.dense_budget,
                          task=self.task, **cols))
        chain = Chain(f"{self.pattern} profile", dense, tuple(
            PointJob(self._spec(s), budget=self.budget, distill=self._distill(),
                     learning_rate=self._learning_rate())
            for s in GRID[1:]))
        return split_from_dense([chain]) if self.from_dense else [chain]

    def majority_rate_dev(self) -> float | None:
        """The majority-class rate of the dev split the points are evaluated on (capped by
        the budget), from the dataset alone (0-1); ``None`` for translation.

        Raises:
            FitformerError: the dataset cannot be loaded.
        """
        return self._majority_dev("accuracy")

    def majority_baseline_dev(self) -> float | None:
        """The score, in :attr:`metric`, of always answering the most frequent class of
        the dev split the points are evaluated on (capped by the budget;
        :func:`fitformer.training.evaluation.majority_baseline`), 0-1; ``None`` for
        translation.

        Raises:
            FitformerError: the dataset cannot be loaded.
        """
        return self._majority_dev(self.metric)

    def _majority_dev(self, metric: str) -> float | None:
        from fitformer.data import load_dataset
        from fitformer.training.budgets import get_budget
        from fitformer.training.evaluation import majority_baseline

        if self.task != "classification":
            return None
        data = load_dataset(self.dataset, task=self.task, **self._columns())
        return majority_baseline(data.dev.subset(get_budget(self.budget).dev_examples).labels,
                                 metric)

    def plan(self, upto: float = GRID[-1]) -> Plan:
        """What :meth:`point` (``upto``) would train, without training anything: the dense
        reference and each pruned point, cached or not, with their optimiser steps and the
        estimated minutes (:func:`step_seconds`).

        Raises:
            FitformerError: the dataset or the budget is invalid.
        """
        import math

        from fitformer.data import load_dataset
        from fitformer.sparsity.prune import PRUNE_RECIPE, TRANSLATION_PRUNE_RECIPE, point_steps
        from fitformer.training.budgets import get_budget
        from fitformer.training.finetune import DENSE_RECIPE, finetune
        from fitformer.training.translation import capped_splits, translation_recipe

        b = get_budget(self.budget)
        sec_per_step, overhead_s, source = step_seconds(self.task)
        translation = self.task == "translation"
        data = load_dataset(self.dataset, task=self.task, **self._columns())
        items: list[PlanItem] = []
        dense_dir = self.dense_dir
        if dense_dir is None:
            res = finetune(self.model, self.dataset, budget=self.dense_budget,
                           task=self.task, cached_only=True, **self._columns())
            dense_dir = res.path if res else None
            db = get_budget(self.dense_budget)
            if translation:
                n = len(capped_splits(data, db)[0])
                steps = translation_recipe(self.dense_budget, seed=0, max_length=64,
                                           epochs=None, learning_rate=None).total_steps(n)
                what = f"dense reference (from scratch; always the {self.dense_budget} budget)"
            else:
                n = len(data.train.subset(db.train_examples))
                steps = math.ceil(db.dense_epochs * math.ceil(n / DENSE_RECIPE.batch_size))
                what = f"dense reference ({self.dense_budget} budget)"
            items.append(PlanItem(what, 0.0, bool(res), steps,
                                  0 if res else res.saved_steps))
        else:
            items.append(PlanItem("dense reference (given)", 0.0, True, 0))
        if translation:
            n = len(capped_splits(data, b)[0])
            steps = point_steps(b, n, TRANSLATION_PRUNE_RECIPE.batch_size, None)
        else:
            n = len(data.train.subset(b.train_examples))
            steps = point_steps(b, n, PRUNE_RECIPE.batch_size, None)
        chain_cached = dense_dir is not None
        if chain_cached:
            self.dense_dir = dense_dir
        for s in GRID[1:]:
            if s > upto + 1e-9:
                break
            if chain_cached or (self.from_dense and dense_dir is not None):
                chain_cached = self.point(s, train=False) is not None
            missing = self._uncached.get(s)
            items.append(PlanItem(f"{self.pattern} {s:g}", s, chain_cached, steps,
                                  0 if chain_cached or missing is None
                                  else missing.saved_steps))
        return Plan(items, sec_per_step, overhead_s, source)

    def train_command(self) -> str:
        """The command that trains this profile's points, e.g. ``fitformer profile --budget
        tiny`` (options at their default left out; a dense run the user named comes as
        ``--dense DIR``)."""
        import shlex

        translation = self.task == "translation"
        default_dataset = "tatoeba-en-fr" if translation else "rotten-tomatoes"
        default_block_text = "x".join(map(str, default_block(self.pattern, self.task)))
        has_blocks = self._spec(GRID[-1]).make_pattern().has_blocks
        args = ["fitformer", "profile", "--budget", self.budget]
        for flag, value, default in (("--model", self.model, "default"),
                                     ("--dataset", self.dataset, default_dataset),
                                     ("--pattern", self.pattern, "hp"),
                                     ("--level2-density", self.level2_density, None),
                                     ("--block", "x".join(map(str, self.block))
                                      if has_blocks else default_block_text,
                                      default_block_text),
                                     ("--banks", self.banks, 4),
                                     ("--nm-m", self.nm_m if self.pattern == "nm" else 4, 4),
                                     ("--task", self.task, "classification"),
                                     ("--metric", self.metric, "accuracy"),
                                     ("--dense", self.dense_dir if self.dense_given
                                      else None, None),
                                     ("--text-column", self.text_column, "text"),
                                     ("--label-column", self.label_column, "label")):
            if value != default:
                args += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
        if self.from_dense:
            args.append("--from-dense")
        return shlex.join(args)

    def known(self) -> list[ProfilePoint]:
        """Every grid point trained so far (cached ones included), by sparsity."""
        self.dense()
        for s in GRID[1:]:
            if self.point(s, train=False) is None and not self.from_dense:
                break  # a chain: the later points start from this one
        return [self._points[s] for s in sorted(self._points)]

    def compute(self) -> list[ProfilePoint]:
        """Every grid point (trains what is missing)."""
        self.point(GRID[-1])
        return self.known()
