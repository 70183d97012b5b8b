"""The headline runs of the pruning recipe (issue 16): HP and unstructured at 0.8 and 0.9
with the same recipe, HP with the per-layer split, and the chained profile that ``select``
uses (:data:`SERIES`), against the dense fine-tune, with paired-bootstrap intervals.

Jump recipe (``RECIPE``): gradual magnitude pruning on the cubic schedule, logit distillation from
the dense fine-tune (``alpha`` 0.9, temperature 2: Hinton et al. 2015; the values of Sanh
et al., "Movement Pruning", NeurIPS 2020), two epochs of the full training split per point
(the first 2/3 prune, the last third recovers with fixed masks), chained dense -> 0.8 ->
0.9, AdamW 5e-5 with linear decay per point; ``RECIPE_LR`` is the same at a peak of 2e-4
(``prune --lr``). Runs are :func:`fitformer.sparsity.prune.prune`
calls, cached by key, so the experiment resumes.

For each run, the dev sentences' correctness at fp32 is compared with the dense model's on
the same sentences: the difference of accuracies with a 95% paired-bootstrap interval
(Efron & Tibshirani 1993; 10,000 resamples of the 1,000 dev sentences, numpy, seed 0). The
previous recipe's numbers (no distillation, one epoch per point, chained 0.5 -> 0.7 -> 0.8
-> 0.9) come from ``docs/pattern-comparison.json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fitformer.select.profile import GRID, PROFILE_DISTILL, PROFILE_LEARNING_RATE
from fitformer.sparsity.prune import PRUNE_RECIPE
from fitformer.training.loop import DistillConfig

RECIPE = {"distill": DistillConfig("logits", temperature=2.0, alpha=0.9),
          "epochs_per_point": 2.0}
#: The jump recipe at a 4x higher peak learning rate (2e-4, twice the dense fine-tune's
#: 1e-4): the 36 pruned matrices lose most of their weights at once and move further than a
#: fine-tune does.
RECIPE_LR = {**RECIPE, "learning_rate": 2e-4}
#: The learning-rate scan's upper point (HP 0.8 only).
RECIPE_LR_HIGH = {**RECIPE, "learning_rate": 4e-4}
#: Longer recovery: four epochs per point at 2e-4 (the pruning window and the recovery
#: with fixed masks both twice as long).
RECIPE_LONG = {**RECIPE_LR, "epochs_per_point": 4.0}
#: TinyBERT-style intermediate-layer distillation (hidden states and attention
#: probabilities, Jiao et al. 2020) on top of the logit term, at 2e-4.
RECIPE_LAYERS = {**RECIPE_LR, "distill": DistillConfig("layers", temperature=2.0, alpha=0.9)}
#: Distillation on augmented data (Tang et al. 2019; TinyBERT's data augmentation): three
#: noisy copies of every training sentence, labelled by the teacher, one epoch over the
#: 4x set per point at 2e-4: the optimiser steps of ``RECIPE_LONG``, on new sentences
#: instead of the same ones four times.
RECIPE_AUGMENT = {"distill": DistillConfig("logits", temperature=2.0, alpha=0.9, augment=3),
                  "epochs_per_point": 1.0, "learning_rate": 2e-4}
#: Twice the augmented data (six noisy copies, one epoch over the 7x set = 2,352 steps per
#: point): does HP with 1x16 blocks still gain from more distillation sentences?
RECIPE_AUGMENT_6 = {**RECIPE_AUGMENT,
                    "distill": DistillConfig("logits", temperature=2.0, alpha=0.9, augment=6)}


@dataclass(frozen=True)
class Series:
    """One recipe applied to one pattern: ``grid`` sparsities pruned in a chain from the
    dense run, each with ``prune`` keyword arguments ``kwargs`` and the ``spec`` extras
    (``split_mode``, ``level2_density``: the HP split's d2, default the design.md §3
    rule; ``block``: the level-1 block ``(r, c)``, default 16 x 16; ``recipe``: the label of
    the series with the same recipe, for the comparison with unstructured; ``former``:
    labels the series had in earlier reports)."""

    label: str
    pattern: str
    grid: tuple[float, ...]
    kwargs: dict
    split_mode: str = "global"
    level2_density: float | None = None
    block: tuple[int, int] = (16, 16)
    recipe: str | None = None       # the series whose recipe this one shares (default: label)
    former: tuple[str, ...] = ()    # earlier labels (rows of an earlier pruning-recipe.json)

    @property
    def recipe_label(self) -> str:
        return self.recipe or self.label


_PROFILE = {"distill": DistillConfig(*PROFILE_DISTILL)}
_AUGMENTED = "jump + logit KD on 3x augmented data, 1 epoch, lr 2e-4"
_CHAIN_LR = "chain + logit KD, 1 epoch, lr 2e-4"
#: select's profile recipe (one epoch per point, chained 0.5 -> 0.95) at a peak of 2e-4.
_PROFILE_LR = {**_PROFILE, "learning_rate": PROFILE_LEARNING_RATE}
SERIES = (
    Series("jump + logit KD, 2 epochs", "hp", (0.8, 0.9), RECIPE),
    Series("jump + logit KD, 2 epochs", "unstructured", (0.8, 0.9), RECIPE),
    Series("jump + logit KD, 2 epochs, per-layer split", "hp", (0.8,), RECIPE,
           split_mode="per-layer"),
    Series("jump + logit KD, 2 epochs, lr 2e-4", "hp", (0.8, 0.9), RECIPE_LR),
    Series("jump + logit KD, 2 epochs, lr 2e-4", "unstructured", (0.8, 0.9), RECIPE_LR),
    Series("jump + logit KD, 2 epochs, lr 4e-4", "hp", (0.8,), RECIPE_LR_HIGH),
    Series("jump + logit KD, 4 epochs, lr 2e-4", "hp", (0.8, 0.9), RECIPE_LONG),
    Series("jump + layer KD, 2 epochs, lr 2e-4", "hp", (0.8,), RECIPE_LAYERS),
    # d2 = 1 collapsed to the majority class under the previous recipe (issue 16, item 3).
    Series("jump + logit KD, 2 epochs, lr 2e-4, d2 = 1", "hp", (0.8,), RECIPE_LR,
           level2_density=1.0),
    Series("chain 0.5-0.95 + logit KD, 1 epoch (select's profile until 2026-12-01)", "hp",
           GRID[1:], _PROFILE),
    # The profile's chain at the jump recipe's learning rate: the candidate for select's
    # profile, and HP against unstructured at 0.5 and 0.7 at one recipe.
    Series("chain + logit KD, 1 epoch, lr 2e-4, 16x16 blocks", "hp", GRID[1:],
           _PROFILE_LR, recipe=_CHAIN_LR,
           former=("chain + logit KD, 1 epoch, lr 2e-4 (select's profile)",)),
    Series(_CHAIN_LR, "unstructured", GRID[1:-1], _PROFILE_LR),
    # select's profile since session 12: the same chain with 1x16 level-1 blocks
    # (fitformer.select.profile.SELECT_HP_BLOCK).
    Series("chain + logit KD, 1 epoch, lr 2e-4, 1x16 blocks (select's profile)", "hp",
           GRID[1:], _PROFILE_LR, block=(1, 16), recipe=_CHAIN_LR),
    Series(_AUGMENTED, "hp", (0.8, 0.9), RECIPE_AUGMENT),
    Series(_AUGMENTED, "unstructured", (0.8, 0.9), RECIPE_AUGMENT),
    # Finer level-1 blocks at the same recipe: the structure, not the recipe, costs HP its
    # accuracy (every recipe above leaves HP 0.8 at 0.79-0.80); r = 4 and r = 1 keep the
    # column balance (one stripe of c = 16 columns per PE, B = 4 banks) with more freedom
    # to choose which output rows each stripe keeps.
    Series(f"{_AUGMENTED}, 4x16 blocks", "hp", (0.8, 0.9), RECIPE_AUGMENT, block=(4, 16),
           recipe=_AUGMENTED),
    Series(f"{_AUGMENTED}, 1x16 blocks", "hp", (0.8, 0.9), RECIPE_AUGMENT, block=(1, 16),
           recipe=_AUGMENTED),
    Series("jump + logit KD on 6x augmented data, 1 epoch, lr 2e-4, 1x16 blocks", "hp",
           (0.8, 0.9), RECIPE_AUGMENT_6, block=(1, 16)),
)
BOOTSTRAP_RESAMPLES = 10_000


def paired_bootstrap(a: np.ndarray, b: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES,
                     seed: int = 0) -> tuple[float, float, float]:
    """``(mean(a) - mean(b), low, high)``: the difference of two accuracies measured on the
    same examples (bool arrays of equal length) with its 95% percentile interval over
    ``resamples`` paired bootstrap resamples.

    Raises:
        ValueError: arrays of different lengths or empty.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.size == 0:
        raise ValueError("paired bootstrap needs two non-empty arrays of equal length")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(resamples, a.size))
    diffs = a[idx].mean(axis=1) - b[idx].mean(axis=1)
    low, high = np.percentile(diffs, [2.5, 97.5])
    return float(a.mean() - b.mean()), float(low), float(high)


def dev_correct(run_dir: Path, metrics: dict, max_length: int = 64) -> np.ndarray:
    """Per dev sentence (split order), whether the run's fp32 prediction is right: from
    ``metrics.json`` when recorded, else evaluated now (runs made before it was recorded)."""
    rec = (metrics.get("per_example_correct") or {}).get("dev", {}).get("fp32")
    if rec:
        return np.frombuffer(rec.encode(), dtype=np.uint8) == ord("1")
    from fitformer.data import load_dataset
    from fitformer.models.loading import load_classifier, load_tokenizer, resolve_model
    from fitformer.training.budgets import get_budget
    from fitformer.training.evaluation import evaluate_classifier
    from fitformer.training.finetune import encode_splits

    ref = resolve_model(str(run_dir))
    data = load_dataset("rotten-tomatoes")
    _, dev, _ = encode_splits(load_tokenizer(ref), data, get_budget(metrics["budget"]),
                              max_length)
    return np.array(evaluate_classifier(load_classifier(ref), dev).correct, dtype=bool)


def run(*, train: bool = True, out_dir: Path = Path("docs"), only: str | None = None,
        log: Callable[[str], None] = print) -> dict:
    """Train (or read from the cache) the headline runs, compare them with the dense
    fine-tune and write ``docs/pruning-recipe.md`` and ``.json``. With ``train=False``
    only cached runs are reported; with ``only`` only the series whose
    ``"label (pattern)"`` contains that text train (the others are reported if cached).

    Raises:
        FitformerError: ``only`` matches no series (the message lists them).
    """
    from fitformer.errors import FitformerError

    names = [f"{x.label} ({x.pattern})" for x in SERIES]
    if only is not None and not any(only in n for n in names):
        raise FitformerError(f"--only {only!r} matches no series; the series are: "
                         + "; ".join(names))
    from fitformer.sparsity.prune import PruneSpec, prune
    from fitformer.training.finetune import finetune

    dense = finetune("default", "rotten-tomatoes", budget="default")
    dense_ok = dev_correct(dense.path, dense.metrics)
    earlier = _earlier_rows(Path(out_dir) / "pruning-recipe.json")
    rows = []
    for ser in SERIES:
        src = dense.path
        for s in ser.grid:
            spec = PruneSpec(ser.pattern, s, split_mode=ser.split_mode,
                             level2_density=ser.level2_density, block=ser.block)
            kw = dict(spec=spec, from_dir=src, budget="default", **ser.kwargs)
            res = None if src is None else prune("default", "rotten-tomatoes",
                                                 cached_only=True, **kw)
            if not res and src is not None and train and (
                    only is None or only in f"{ser.label} ({ser.pattern})"):
                log(f"training {ser.pattern} {s} ({ser.label}) ...")
                res = prune("default", "rotten-tomatoes", **kw)
            if not res:
                old = next((earlier[k] for k in ((x, ser.pattern, s) for x in
                                                  (ser.label, *ser.former)) if k in earlier),
                           None)
                if old is not None:  # measured on a machine whose run cache is gone
                    rows.append({**old, "series": ser.label, "recipe": ser.recipe_label,
                                 "earlier_report": True})
                    src = None       # the rest of the chain can only come from there too
                    continue
                log(f"{ser.pattern} {s} ({ser.label}): not trained yet")
                break
            m = res.metrics
            diff, lo, hi = paired_bootstrap(dev_correct(res.path, m), dense_ok)
            rows.append({"series": ser.label, "recipe": ser.recipe_label,
                         "pattern": ser.pattern,
                         "split": ser.split_mode, "block": list(ser.block),
                         "requested_sparsity": s,
                         "achieved_sparsity": m["sparsity"]["overall"],
                         "dev": m["accuracy"]["dev"], "test": m["accuracy"]["test"],
                         "dev_diff_to_dense": diff, "dev_diff_ci95": [lo, hi],
                         "collapsed": (m.get("collapsed") or {}).get("fp32"),
                         "majority_rate_dev": (m.get("majority_rate") or {}).get("dev"),
                         "steps": m["steps"], "train_time_s": m["train_time_s"],
                         "learning_rate": res.key["recipe"]["learning_rate"],
                         "run_dir": res.path.name, "dense_run_dir": dense.path.name})
            src = res.path
    old = {}
    prev = Path(out_dir) / "pattern-comparison.json"
    if not prev.is_file():
        prev = Path("docs") / "pattern-comparison.json"
    if prev.is_file():
        for r in json.loads(prev.read_text()).get("rows", []):
            if r["series"] in ("hp", "unstructured"):
                old[(r["series"], r["requested_sparsity"])] = r["dev_fp32"]
    result = {"series": [{"label": x.label, "pattern": x.pattern, "grid": list(x.grid),
                          "split": x.split_mode, "block": list(x.block),
                          "distill": x.kwargs["distill"].as_key(),
                          "epochs_per_point": x.kwargs.get("epochs_per_point", 1.0),
                          "learning_rate": x.kwargs.get("learning_rate",
                                                        PRUNE_RECIPE.learning_rate)}
                         for x in SERIES],
              "dense": {"dev": dense.metrics["accuracy"]["dev"],
                        "test": dense.metrics["accuracy"]["test"], "run_dir": dense.path.name},
              "rows": rows, "previous_recipe_dev_fp32": {f"{p} {s}": v
                                                         for (p, s), v in old.items()}}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "pruning-recipe.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "pruning-recipe.md").write_text(_markdown(result, old))
    return result


def _earlier_rows(path: Path) -> dict[tuple[str, str, float], dict]:
    """The rows of an earlier ``pruning-recipe.json`` by ``(series, pattern, sparsity)``:
    a run cache does not move between machines, so a point that is not cached here keeps
    the row measured where it was (marked ``earlier_report``); empty if there is none."""
    if not path.is_file():
        return {}
    try:
        old = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        from fitformer.errors import FitformerError

        raise FitformerError(f"{path} is not valid JSON ({e}); restore it from git "
                             "(git checkout -- docs/pruning-recipe.json) or delete it.") from e
    dense = (old.get("dense") or {}).get("run_dir")
    return {(r["series"], r["pattern"], r["requested_sparsity"]):
            {**r, "dense_run_dir": r.get("dense_run_dir", dense)}
            for r in old.get("rows", [])}


def _markdown(res: dict, old: dict) -> str:
    d = res["dense"]
    lines = ["# Pruning recipe: headline runs (issue 16)", "",
             "Made by `fitformer experiment recipe` (`src/fitformer/experiments/recipe.py`). "
             "MiniLM (all-MiniLM-L6-v2) on Rotten Tomatoes, full training split (default "
             "budget), gradual magnitude pruning, AdamW with linear decay per point; logit "
             "distillation from the dense fine-tune at T 2, alpha 0.9 in every series. "
             "Series:", ""]
    for x in res["series"]:
        r_, c_ = x.get("block", (16, 16))
        lines.append(f"- **{x['label']}** ({x['pattern']}, {x['split']} split"
                     + (f", {r_}x{c_} blocks" if x["pattern"] == "hp" else "") + "): "
                     f"peak learning rate {x['learning_rate']:g}, "
                     f"{x['epochs_per_point']:g} epoch(s) per point"
                     + (f" over the training split plus {x['distill']['augment']} noisy "
                        "copies of each sentence (labelled by the teacher)"
                        if (x["distill"] or {}).get("augment") else "")
                     + ", chained dense -> "
                     + " -> ".join(f"{g:g}" for g in x["grid"]) + ".")
    lines += ["", f"Dense fine-tune: dev {d['dev']['fp32']:.4f}, test {d['test']['fp32']:.4f} "
              f"(run {d['run_dir']}). The previous recipe (no distillation, one epoch per "
              "point, chained 0.5 -> 0.7 -> 0.8 -> 0.9) is from docs/pattern-comparison.json."]
    if any(r.get("earlier_report") for r in res["rows"]):
        lines += ["", "Rows marked * were measured on an earlier machine (their runs are not "
                  "in this run cache; the rows are kept from the previous "
                  "pruning-recipe.json); their difference to dense is to the dense run "
                  "they were compared with then (`dense_run_dir` in the JSON)."]
    lines += ["", "| series | pattern | sparsity (achieved) | dev fp32 | dev - dense [95% "
              "paired bootstrap] | previous recipe dev | test fp32 | dev fx16 | dev fx8 | "
              "collapsed | steps |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in res["rows"]:
        lo, hi = r["dev_diff_ci95"]
        prev = old.get((r["pattern"], r["requested_sparsity"]))
        mark = " *" if r.get("earlier_report") else ""
        lines.append(
            f"| {r['series']}{mark} | {r['pattern']} | {r['requested_sparsity']:g} "
            f"({r['achieved_sparsity']:.4f}) | "
            f"{r['dev']['fp32']:.4f} | {r['dev_diff_to_dense']:+.4f} [{lo:+.4f}, {hi:+.4f}] | "
            f"{'-' if prev is None else f'{prev:.3f}'} | {r['test']['fp32']:.4f} | "
            f"{r['dev']['fx16']:.4f} | {r['dev']['fx8']:.4f} | "
            f"{r['collapsed'] or 'no'} | {r['steps']} |")
    lines += ["", "Targets (issue 16): HP at 0.8 within 0.02 of dense, HP at 0.9 within 0.05, "
              "as point estimates; HP within 0.02 of unstructured at equal recipe.", "",
              *verdict(res["rows"])]
    return "\n".join(lines)


#: Issue 16's targets: HP's dev accuracy at most this far below dense, by sparsity.
TARGET_DROP = {0.8: 0.02, 0.9: 0.05}
#: ... and at most this far below unstructured at equal recipe and sparsity.
TARGET_VS_UNSTRUCTURED = 0.02


def verdict(rows: list[dict]) -> list[str]:
    """Markdown lines judging the targets on ``rows`` (as :func:`run` records them): the
    best HP run per target sparsity against dense, and HP against unstructured in every
    series that has both at one sparsity."""
    out = ["## Verdict (computed from the rows above)", ""]
    hp = [r for r in rows if r["pattern"] == "hp"]
    for s, drop in TARGET_DROP.items():
        at = [r for r in hp if r["requested_sparsity"] == s]
        if not at:
            out.append(f"- HP {s:g}: no run yet.")
            continue
        best = max(at, key=lambda r: r["dev"]["fp32"])
        d = best["dev_diff_to_dense"]
        lo, hi = best["dev_diff_ci95"]
        out.append(f"- HP {s:g} vs dense: best dev {best['dev']['fp32']:.4f} "
                   f"({best['series']}), {d:+.4f} [{lo:+.4f}, {hi:+.4f}]; target within "
                   f"{drop:g}: {'met' if d >= -drop else 'not met'}.")
    unst = {(r.get("recipe", r["series"]), r["requested_sparsity"]): r for r in rows
            if r["pattern"] == "unstructured"}
    for r in hp:
        u = unst.get((r.get("recipe", r["series"]), r["requested_sparsity"]))
        if u is None or r["split"] != "global":
            continue
        d = r["dev"]["fp32"] - u["dev"]["fp32"]
        out.append(f"- HP vs unstructured, {r['series']}, {r['requested_sparsity']:g}: "
                   f"{r['dev']['fp32']:.4f} vs {u['dev']['fp32']:.4f} ({d:+.4f}); target "
                   f"within {TARGET_VS_UNSTRUCTURED:g}: "
                   f"{'met' if d >= -TARGET_VS_UNSTRUCTURED else 'not met'}.")
    return [*out, ""]
