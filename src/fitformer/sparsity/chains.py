"""Chains of pruning points as independent jobs (issue 21).

A :class:`Chain` is a dense reference (:class:`DenseJob`) and the sparsity points pruned
from it (:class:`PointJob`), each point starting from the previous one, as the pattern
comparison and the profile do (design.md §9); with ``from_dense`` every point starts from
the dense run instead, so that the points are independent and can run in parallel
(:func:`split_from_dense`). Which run a point starts from is its run key's ``from``, so a
point made from the dense run is a different run from the chained one.

:func:`run_chain` runs one chain in this process through :func:`fitformer.sparsity.prune.prune`
and :func:`fitformer.training.finetune.finetune`: every point is read from the run cache or
trained into it, with the same run key whichever process or machine runs it, so a chain
interrupted anywhere resumes from its finished runs and the run in progress from its
checkpoint. :mod:`fitformer.sparsity.executors` runs many chains, in this process or as
Ray tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from fitformer.sparsity.prune import PruneSpec
from fitformer.training.loop import DistillConfig


@dataclass(frozen=True)
class DenseJob:
    """The dense reference a chain prunes from: the cached dense fine-tune of ``model`` on
    ``dataset`` at ``budget`` (:func:`~fitformer.training.finetune.finetune`, trained when
    missing), or the run directory ``dense_dir`` a user names.

    Attributes:
        model: ``default``, a ``save_pretrained`` folder or a hub id.
        dataset: ``rotten-tomatoes``, a local file or ``hf:NAME``.
        budget: the dense fine-tune's budget (``tiny``, ``quick``, ``default``).
        task: ``classification`` or ``translation``.
        seed: seed of the fine-tune and of every point pruned from it.
        max_length: tokens per sequence (part of every run key).
        text_column, label_column: columns of a local dataset file.
        dense_dir: an existing dense run to use instead of the fine-tune.
    """

    model: str = "default"
    dataset: str = "rotten-tomatoes"
    budget: str = "default"
    task: str = "classification"
    seed: int = 0
    max_length: int = 64
    text_column: str = "text"
    label_column: str = "label"
    dense_dir: str | None = None

    def run(self, *, train: bool = True):
        """The dense run (:class:`~fitformer.training.finetune.RunResult`), read from the
        cache or trained when ``train``; when it is not cached and not ``train``, a falsy
        :class:`~fitformer.training.runs.Uncached`.

        Raises:
            FitformerError: bad model, dataset or budget, or a ``dense_dir`` that is not a
                run directory.
        """
        from fitformer.training.finetune import RunResult, finetune
        from fitformer.training.runs import load_run_info

        if self.dense_dir is not None:
            path = Path(self.dense_dir).expanduser()
            run, metrics = load_run_info(path)
            return RunResult(path, run, metrics, cached=True)
        return finetune(self.model, self.dataset, task=self.task, budget=self.budget,
                        seed=self.seed, max_length=self.max_length,
                        text_column=self.text_column, label_column=self.label_column,
                        cached_only=not train)

    @property
    def label(self) -> str:
        """``model / dataset (budget)``, or the named dense run."""
        if self.dense_dir is not None:
            return f"dense {self.dense_dir}"
        return f"{self.model} / {self.dataset} ({self.budget} dense)"


@dataclass(frozen=True)
class PointJob:
    """One sparsity point: :func:`~fitformer.sparsity.prune.prune`'s arguments except the
    run it starts from (the chain decides that) and the data (the chain's dense job).

    Attributes:
        spec: pattern, its parameters, sparsity, pruner and HP split.
        budget: ``tiny``, ``quick`` or ``default``.
        distill: distillation from the dense teacher (``None``: none).
        epochs_per_point: epochs of the training split (``None``: the budget's default).
        learning_rate: peak AdamW learning rate (``None``: the recipe's default).
    """

    spec: PruneSpec
    budget: str = "default"
    distill: DistillConfig | None = None
    epochs_per_point: float | None = None
    learning_rate: float | None = None

    @property
    def label(self) -> str:
        """``pattern sparsity`` (``hp 0.8``)."""
        return f"{self.spec.pattern} {self.spec.sparsity:g}"


@dataclass(frozen=True)
class Chain:
    """A dense job and the points pruned from it, in order.

    Attributes:
        name: how progress lines and results name the chain (unique within a sweep).
        dense: the dense reference.
        points: the sparsity points, each pruned from the previous one (masks only
            shrink, so sparsities must not decrease), or from the dense run when
            ``from_dense``.
        from_dense: every point starts from the dense run.
    """

    name: str
    dense: DenseJob
    points: tuple[PointJob, ...]
    from_dense: bool = False

    def __post_init__(self):
        from fitformer.errors import FitformerError

        if not self.from_dense:
            s = [p.spec.sparsity for p in self.points]
            if any(b < a for a, b in zip(s, s[1:], strict=False)):
                raise FitformerError(f"chain {self.name}: sparsities {s} decrease; masks only "
                                     "shrink along a chain, so sort them (or use "
                                     "--from-dense).")


@dataclass(frozen=True)
class PointResult:
    """A finished point: the job, its run directory, ``metrics.json`` and whether it came
    from the cache."""

    chain: str
    point: PointJob
    run_dir: Path
    metrics: dict = field(repr=False)
    cached: bool


def split_from_dense(chains: Iterable[Chain]) -> list[Chain]:
    """Every point of ``chains`` as a chain of its own that starts from the dense run (the
    ``--from-dense`` option: independent points that run in parallel). Points that are the
    same job on the same dense reference appear once."""
    out: dict[tuple, Chain] = {}
    for chain in chains:
        for p in chain.points:
            key = (chain.dense, p)
            if key not in out:
                out[key] = Chain(f"{chain.name} @ {p.spec.sparsity:g}", chain.dense, (p,),
                                 from_dense=True)
    return list(out.values())


def unique_chains(chains: Iterable[Chain]) -> list[Chain]:
    """``chains`` without repeats (same dense job, points and mode; the first name wins):
    two tasks training one run would wait on each other's lock.

    Raises:
        FitformerError: two different chains share a name.
    """
    from fitformer.errors import FitformerError

    seen: dict[tuple, Chain] = {}
    names: dict[str, Chain] = {}
    for c in chains:
        ident = (c.dense, c.points, c.from_dense)
        if ident in seen:
            continue
        if c.name in names:
            raise FitformerError(f"two different chains are both named {c.name!r}; give "
                                 "each chain its own name.")
        seen[ident] = names[c.name] = c
    return list(seen.values())


def run_chain(chain: Chain, *, train: bool = True,
              on_point: Callable[[PointResult], None] | None = None) -> list[PointResult]:
    """Run ``chain`` in this process: the dense run, then each point from the previous one
    (or from the dense run), every run read from the cache or trained into it.

    Args:
        chain: what to run.
        train: train what is not cached; with ``False`` the chain stops at its first
            point that is not cached.
        on_point: called with each finished point, in order.

    Returns:
        The finished points, in chain order (fewer than ``chain.points`` only when
        ``train`` is false).

    Raises:
        FitformerError: bad model, dataset, pattern or recipe (raised by ``prune`` and
            ``finetune`` before they train), or another process training the same run.
    """
    from fitformer.sparsity.prune import prune

    dense = chain.dense.run(train=train)
    if not dense:
        return []
    d = chain.dense
    columns = ({} if d.task == "translation" else
               {"text_column": d.text_column, "label_column": d.label_column})
    results: list[PointResult] = []
    previous = dense.path
    for p in chain.points:
        res = prune("default", d.dataset, spec=p.spec,
                    from_dir=dense.path if chain.from_dense else previous, budget=p.budget,
                    task=d.task, seed=d.seed, max_length=d.max_length,
                    distill=p.distill, epochs_per_point=p.epochs_per_point,
                    learning_rate=p.learning_rate, cached_only=not train, **columns)
        if not res:
            break
        out = PointResult(chain.name, p, res.path, res.metrics, res.cached)
        results.append(out)
        if on_point is not None:
            on_point(out)
        previous = res.path
    return results

