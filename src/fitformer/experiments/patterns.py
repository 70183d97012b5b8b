"""The pattern comparison: accuracy vs sparsity for every pattern on MiniLM + Rotten
Tomatoes, at one budget for every run (issue 3, design.md §3, §9).

Protocol:

- one chain per pattern (unstructured, block, column-balanced block, bank-balanced, HP with
  the default split) over sparsities 0.5, 0.7, 0.8, 0.9, each point starting from the
  previous one (the first from the dense fine-tune), gradual magnitude pruning;
- HP's other level-2 splits (``d2`` = 1, 0.75, 0.25) at 0.8 and 0.9, chained 0.8 -> 0.9
  from the dense fine-tune (a smaller ``d2`` than the default is not reachable from the
  default chain's masks, which only shrink);
- one ADMM run: HP (default split) at 0.8 from the dense fine-tune.

Two recipes (``recipe``): ``none``, the comparison of issue 3 (one epoch per point, AdamW
5e-5, no distillation; ``pattern-comparison.*``), and ``profile``, select's profile recipe
(issue 16: the same chains distilling the dense model's logits at T 2, alpha 0.9, peak
learning rate 2e-4; ``pattern-comparison-profile.*``), which also runs HP with 1x16 level-1
blocks (select's default block, :data:`fitformer.select.profile.SELECT_HP_BLOCK`), with the
default split and with the per-layer split of :mod:`fitformer.sparsity.sensitivity` (each
point's scan runs inside the previous point's masks, as chaining requires).

Every run is a :func:`fitformer.sparsity.prune.prune` call, cached by its key, so the
experiment resumes where it stopped; an interrupted run resumes from its checkpoint.
Accuracies come with 95% Wilson score intervals (Wilson 1927) computed by
``scipy.stats.binomtest``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fitformer.sparsity.chains import (
    Chain,
    DenseJob,
    PointJob,
    PointResult,
    run_chain,
    split_from_dense,
)
from fitformer.sparsity.executors import Executor, run_chains
from fitformer.sparsity.prune import PruneSpec

GRID = (0.5, 0.7, 0.8, 0.9)
RECIPES = ("none", "profile")
PATTERN_ORDER = ("hp", "unstructured", "cbb", "bank", "block")
LABELS = {"hp": "HP (default split)", "unstructured": "unstructured",
          "cbb": "column-balanced block", "bank": "bank-balanced", "block": "block 16x16"}


@dataclass(frozen=True)
class Series:
    """A chain of points sharing pattern, split and pruner."""

    name: str
    label: str
    specs: tuple[PruneSpec, ...]


def protocol(recipe: str = "none") -> list[Series]:
    """The runs of the comparison, most informative first (``recipe`` ``profile`` adds HP
    with 1x16 level-1 blocks, default and per-layer split, after HP)."""
    series = [Series(p, LABELS[p], tuple(PruneSpec(pattern=p, sparsity=s) for s in GRID))
              for p in PATTERN_ORDER]
    if recipe == "profile":
        from fitformer.select.profile import SELECT_HP_BLOCK

        r, c = SELECT_HP_BLOCK
        series.insert(1, Series(f"hp-{r}x{c}", f"HP (default split), {r}x{c} blocks",
                                tuple(PruneSpec(pattern="hp", sparsity=s, block=(r, c))
                                      for s in GRID)))
        series.insert(2, Series(f"hp-per-layer-{r}x{c}", f"HP (per-layer split), {r}x{c} blocks",
                                tuple(PruneSpec(pattern="hp", sparsity=s, block=(r, c),
                                                split_mode="per-layer") for s in GRID)))
    for d2 in (1.0, 0.75, 0.25):
        series.append(Series(f"hp-d2-{d2:g}", f"HP d2={d2:g}",
                             tuple(PruneSpec(pattern="hp", sparsity=s, level2_density=d2)
                                   for s in (0.8, 0.9))))
    series.append(Series("hp-admm", "HP (default split), ADMM",
                         (PruneSpec(pattern="hp", sparsity=0.8, pruner="admm"),)))
    return series


def recipe_kwargs(recipe: str) -> dict:
    """:class:`~fitformer.sparsity.chains.PointJob` arguments of a recipe (module docstring).

    Raises:
        FitformerError: an unknown recipe.
    """
    if recipe == "none":
        return {}
    if recipe == "profile":
        from fitformer.select.profile import PROFILE_DISTILL, PROFILE_LEARNING_RATE
        from fitformer.training.loop import DistillConfig

        return {"distill": DistillConfig(*PROFILE_DISTILL),
                "learning_rate": PROFILE_LEARNING_RATE}
    from fitformer.errors import FitformerError

    raise FitformerError(f"--recipe {recipe!r}: choose {' or '.join(RECIPES)}.")


def _stem(recipe: str) -> str:
    return "pattern-comparison" if recipe == "none" else f"pattern-comparison-{recipe}"


def wilson_interval(correct: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (scipy.stats.binomtest)."""
    from scipy.stats import binomtest

    ci = binomtest(correct, n).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def _row(series: Series, spec: PruneSpec, metrics: dict, path: Path) -> dict:
    row = {"series": series.name, "label": series.label, "pattern": spec.pattern,
           "pruner": spec.pruner, "requested_sparsity": spec.sparsity,
           "achieved_sparsity": metrics["sparsity"]["overall"],
           "hp_split": metrics["hp_split"], "budget": metrics["budget"],
           "steps": metrics["steps"], "train_time_s": metrics.get("train_time_s"),
           "run_dir": path.name}
    if metrics["hp_split"] == "per_layer":
        from fitformer.sparsity.sensitivity import per_layer_split_text

        row["hp_split_counts"] = per_layer_split_text(path)
    for split in ("dev", "test"):
        n = metrics["split_sizes"][split]
        for prec, acc in metrics["accuracy"][split].items():
            row[f"{split}_{prec}"] = acc
        acc = metrics["accuracy"][split]["fp32"]
        lo, hi = wilson_interval(round(acc * n), n)
        row[f"{split}_fp32_ci95"] = [lo, hi]
        row[f"{split}_n"] = n
    return row


def run_patterns(*, budget: str = "default", out_dir: Path = Path("docs"),
                 only: list[str] | None = None, dense_dir: Path | None = None,
                 report_only: bool = False, executor: Executor | None = None,
                 from_dense: bool = False, recipe: str = "none",
                 log: Callable[[str], None] = print) -> list[dict]:
    """Run (or resume) the comparison and write its results, table and plot (after every
    finished point).

    Args:
        budget: the budget every run uses (stated in the outputs).
        out_dir: where ``pattern-comparison.md``, ``pattern-comparison.json`` and
            ``img/pattern-accuracy.png`` go.
        only: series names to run (default: all of :func:`protocol`).
        dense_dir: the dense run every chain starts from (default: the cached dense
            fine-tune on the full data, created if missing).
        report_only: train nothing; write the report from the runs already cached.
        executor: where the chains run (:class:`~fitformer.sparsity.executors.Executor`:
            in this process, the default, or as Ray tasks); the runs are the same.
        from_dense: every point starts from the dense run instead of the previous point of
            its series (independent points; another protocol, other runs).
        recipe: ``none`` or ``profile`` (module docstring); ``profile`` writes
            ``pattern-comparison-profile.*`` and ``img/pattern-accuracy-profile.png``.
        log: progress lines.

    Returns:
        One row per finished point, in protocol order.
    """
    from fitformer.errors import FitformerError

    kwargs = recipe_kwargs(recipe)
    names = [s.name for s in protocol(recipe)]
    unknown = sorted(set(only or ()) - set(names))
    if unknown:
        raise FitformerError(f"unknown series {unknown}; choose from {', '.join(names)}.")
    dense = (DenseJob(budget="default") if dense_dir is None
             else DenseJob(dense_dir=str(dense_dir)))
    todo = [s for s in protocol(recipe) if only is None or s.name in only]
    by_name = {s.name: s for s in todo}
    order: dict[tuple[str, float], int] = {}
    for s in todo:
        for spec in s.specs:
            order[(s.name, spec.sparsity)] = len(order)
    chain_list = [Chain(s.name, dense, tuple(PointJob(spec, budget=budget, **kwargs)
                                             for spec in s.specs))
                  for s in todo]
    if from_dense:
        chain_list = split_from_dense(chain_list)
    planned = sum(len(c.points) for c in chain_list)
    dense_metrics = dense.run().metrics
    rows: list[dict] = []

    def add(r: PointResult) -> None:
        series = by_name[r.chain.split(" @ ")[0]]
        rows.append(_row(series, r.point.spec, r.metrics, r.run_dir))
        rows.sort(key=lambda x: order[(x["series"], x["requested_sparsity"])])
        write_report(rows, dense_metrics, budget, out_dir, planned, from_dense, recipe)

    if report_only:
        for chain in chain_list:
            run_chain(chain, train=False, on_point=add)
        write_report(rows, dense_metrics, budget, out_dir, planned, from_dense, recipe)
    else:
        run_chains(chain_list, executor or Executor(), log=log, on_point=add)
    return rows


def write_report(rows: list[dict], dense_metrics: dict, budget: str, out_dir: Path,
                 planned: int | None = None, from_dense: bool = False,
                 recipe: str = "none") -> None:
    """Write ``pattern-comparison.json``, ``.md`` and ``img/pattern-accuracy.png`` (with
    recipe ``profile``: ``pattern-comparison-profile.*``, ``img/pattern-accuracy-profile.png``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    dense = {s: dense_metrics["accuracy"][s] for s in ("dev", "test")}
    planned = planned or len(rows)
    stem = _stem(recipe)
    png = "pattern-accuracy.png" if recipe == "none" else f"pattern-accuracy-{recipe}.png"
    (out_dir / f"{stem}.json").write_text(json.dumps(
        {"budget": budget, "recipe": recipe, "dense": dense, "runs_finished": len(rows),
         "runs_planned": planned, "from_dense": from_dense, "rows": rows}, indent=2) + "\n")
    _plot(rows, dense, budget, out_dir / "img" / png)
    training = ("AdamW 5e-5" if recipe == "none" else
                "AdamW peak 2e-4, distilling the dense fine-tune's logits (T 2, alpha 0.9: "
                "select's profile recipe)")
    lines = [
        "# Pattern comparison: accuracy vs sparsity (MiniLM, Rotten Tomatoes)",
        "",
        "Made by `fitformer experiment patterns --budget " + budget
        + ("" if recipe == "none" else f" --recipe {recipe}") + "` "
        "(resumable; see `src/fitformer/experiments/patterns.py` for the protocol).",
        "",
        f"Every run uses the `{budget}` budget: one epoch of the training split per "
        "sparsity point, gradual magnitude pruning on the cubic schedule over the first "
        f"two thirds of the steps, {training}; "
        + ("every point starts from the dense fine-tune (`--from-dense`). " if from_dense else
           "points of a chain start from the previous point, the first from the dense "
           "fine-tune. ")
        + "Accuracy on 1,000 dev and 1,000 test "
        "sentences; [a, b] is the 95% Wilson interval of the fp32 accuracy.",
        "",
        f"Dense fine-tune: dev {dense['dev']['fp32']:.4f} / test {dense['test']['fp32']:.4f} "
        "(fp32).",
        "",
        f"Runs finished: {len(rows)} of {planned}"
        + ("." if len(rows) >= planned else " (in progress: rerun the command to resume)."),
        "",
        f"![accuracy vs sparsity](img/{png})",
        "",
        "| series | sparsity (req. / achieved) | hp_split d1, d2 | dev fp32 [95% CI] | "
        "dev fx16 | dev fx8 | test fp32 [95% CI] | test fx16 | test fx8 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        hs = _split_text(r)
        lines.append(
            f"| {r['label']} | {r['requested_sparsity']:g} / {r['achieved_sparsity']:.4f} | "
            f"{hs} | {r['dev_fp32']:.4f} [{r['dev_fp32_ci95'][0]:.3f}, "
            f"{r['dev_fp32_ci95'][1]:.3f}] | {r['dev_fx16']:.4f} | {r['dev_fx8']:.4f} | "
            f"{r['test_fp32']:.4f} [{r['test_fp32_ci95'][0]:.3f}, "
            f"{r['test_fp32_ci95'][1]:.3f}] | {r['test_fx16']:.4f} | {r['test_fx8']:.4f} |")
    lines += summary_lines(rows, (dense_metrics.get("majority_rate") or {}).get("dev"))
    (out_dir / f"{stem}.md").write_text("\n".join(lines) + "\n")


def summary_lines(rows: list[dict], majority_dev: float | None) -> list[str]:
    """The verdict computed from ``rows``: each series' dev fp32 accuracy minus
    unstructured's at the same requested sparsity (same recipe; a 1,000-sentence dev split
    resolves about +-0.025), and how many runs ended at or below the dev majority-class
    rate ``majority_dev`` (0-1; ``None``: not known). Markdown lines, empty without rows."""
    if not rows:
        return []
    out = [""]
    ref = {r["requested_sparsity"]: r["dev_fp32"] for r in rows
           if r["series"] == "unstructured"}
    if ref:
        grid = sorted(ref)
        out += ["## Gap to unstructured (dev fp32, same recipe)", "",
                "| series | " + " | ".join(f"{s:g}" for s in grid) + " |",
                "| --- |" + " --- |" * len(grid)]
        for label in dict.fromkeys(r["label"] for r in rows if r["series"] != "unstructured"):
            gap = {r["requested_sparsity"]: r["dev_fp32"] - ref[r["requested_sparsity"]]
                   for r in rows if r["label"] == label and r["requested_sparsity"] in ref}
            out.append(f"| {label} | " + " | ".join(
                f"{gap[s]:+.3f}" if s in gap else "-" for s in grid) + " |")
        out.append("")
    if majority_dev is not None:
        low = [f"{r['label']} {r['requested_sparsity']:g}" for r in rows
               if r["dev_fp32"] <= majority_dev + 1e-9]
        out.append(f"Runs at or below the dev majority-class rate ({majority_dev:.3f}): "
                   f"{len(low)} of {len(rows)}" + (f" ({', '.join(low)})." if low else "."))
    return out


def _split_text(row: dict) -> str:
    """The table's HP split cell: ``d1, d2``; ``per layer: d2 0.5 x 32, ...``; ``-``."""
    split = row["hp_split"]
    if split == "per_layer":
        return f"per layer: {row.get('hp_split_counts') or '?'}"
    return f"{split['d1']:.3g}, {split['d2']:.3g}" if split else "-"


def _plot(rows: list[dict], dense: dict, budget: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, split in zip(axes, ("dev", "test"), strict=True):
        ax.axhline(dense[split]["fp32"], color="grey", ls=":", label="dense")
        for series in dict.fromkeys(r["series"] for r in rows):
            pts = [r for r in rows if r["series"] == series]
            x = [r["achieved_sparsity"] for r in pts]
            y = [r[f"{split}_fp32"] for r in pts]
            err = [[r[f"{split}_fp32"] - r[f"{split}_fp32_ci95"][0] for r in pts],
                   [r[f"{split}_fp32_ci95"][1] - r[f"{split}_fp32"] for r in pts]]
            style = "-o" if not series.startswith("hp-") else "--s"
            ax.errorbar(x, y, yerr=err, fmt=style, capsize=3, label=pts[0]["label"])
        ax.set_title(f"{split} accuracy (fp32), budget {budget}")
        ax.set_xlabel("achieved sparsity of the prunable matrices")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    axes[1].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
