"""``fitformer sweep``: a grid of pruning runs over models x datasets x patterns x
sparsities, from a YAML file, in this process or on a Ray cluster (issue 21).

The file (every key but ``sparsities`` optional; unknown keys are refused)::

    budget: quick                 # tiny, quick or default (design.md §9)
    models: [default]             # default, save_pretrained folders or hub ids
    datasets: [rotten-tomatoes]   # rotten-tomatoes or local CSV/TSV/JSONL files
    patterns: [hp, unstructured]  # registered pattern names (fitformer prune --help)
    sparsities: [0.5, 0.7, 0.8, 0.9]
    from_dense: false             # true: every point from the dense run (parallel points)
    seed: 0
    max_length: 64
    text_column: text
    label_column: label
    pattern_params: {block: [16, 16], banks: 4, nm_m: 4, level2_density: null}
    recipe: {distill: logits, distill_temperature: 2.0, distill_alpha: 0.9,
             distill_augment: 0, epochs_per_point: 1, lr: 2.0e-4}

Each (model, dataset, pattern) is one chain through the sorted sparsities, from the dense
fine-tune of the model on the dataset at the budget (:mod:`fitformer.sparsity.chains`);
``from_dense`` makes every point its own chain. The whole file is checked before any task
starts: its YAML, every key and value, each pattern's reach at each sparsity, and that each
local model folder and dataset file exists. The results go to ``OUT/sweep.json``,
``OUT/sweep.md`` and ``OUT/img/sweep-accuracy.png`` (dev accuracy vs achieved sparsity, one
line per chain).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from fitformer.errors import FitformerError
from fitformer.sparsity.chains import Chain, DenseJob, PointJob, split_from_dense, unique_chains
from fitformer.sparsity.executors import Executor, run_chains
from fitformer.training.loop import MAX_AUGMENT


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_lax_scalars(cls, v, info):
        """What pydantic's lax mode would convert silently is refused: YAML's
        ``true``/``false`` (also ``yes``/``no``/``on``/``off``) for anything but a flag
        (``distill_alpha: true`` is a slip, not 1.0), and a quoted string for a number or a
        flag (``distill_alpha: '0.9'``), also inside a list (``sparsities: [true]``)."""
        expected = _expected(cls.model_fields[info.field_name].annotation)
        items = v if isinstance(v, list) and expected.startswith("a list") else [v]
        for x in items:
            if isinstance(x, bool) and "true or false" not in expected:
                raise ValueError(f"got {str(x).lower()} (YAML reads true/false/yes/no/on/off "
                                 f"as a flag); give {expected}")
            if isinstance(x, str) and ("number" in expected or "true or false" in expected):
                raise ValueError(f"got the string {x!r}; give {expected}, without quotes")
        return v


def _expected(annotation) -> str:
    """What a key of ``annotation`` takes, in words (for :meth:`_Strict._no_lax_scalars`)."""
    import types
    import typing

    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return _expected(args[0])
    if typing.get_origin(annotation) is list:
        inner = _expected(args[0]) if args else "values"
        return f"a list of {inner.removeprefix('a ').removeprefix('one of ')}" + (
            "s" if inner in ("a number", "a string") else "")
    if annotation is bool:
        return "true or false"
    if annotation in (int, float) or typing.get_origin(annotation) is typing.Annotated:
        return "a number"
    if annotation is str:
        return "a string"
    return "a value of the key's type"


class PatternParams(_Strict):
    """The pattern parameters every chain of the sweep uses (``fitformer prune``'s
    ``--block``, ``--banks``, ``--nm-m``, ``--level2-density``)."""

    block: tuple[int, int] = (16, 16)
    banks: int = 4
    nm_m: int = 4
    level2_density: float | None = None


class Recipe(_Strict):
    """The pruning recipe (``fitformer prune``'s flags of the same names)."""

    distill: Literal["none", "logits", "layers"] = "none"
    distill_temperature: float = Field(default=2.0, gt=0, allow_inf_nan=False)
    distill_alpha: float = Field(default=0.5, ge=0, le=1, allow_inf_nan=False)
    distill_augment: StrictInt = Field(default=0, ge=0, le=MAX_AUGMENT)
    epochs_per_point: float | None = None
    lr: float | None = None

    @field_validator("epochs_per_point", "lr")
    @classmethod
    def _positive(cls, v):
        if v is not None and not (math.isfinite(v) and v > 0):
            raise ValueError("must be a positive number")
        return v

    @model_validator(mode="after")
    def _augment_needs_distillation(self):
        if self.distill_augment and self.distill == "none":
            raise ValueError("distill_augment labels its copies with the teacher: set "
                             "distill: logits (or layers), or distill_augment: 0")
        unused = sorted({"distill_alpha", "distill_temperature"} & self.model_fields_set)
        if unused and self.distill == "none":
            raise ValueError(f"{' and '.join(unused)} set, but distill is none (no "
                             "distillation): set distill: logits (or layers), or drop them")
        return self


class SweepSpec(_Strict):
    """A sweep file, validated (see the module docstring for its keys)."""

    budget: Literal["tiny", "quick", "default"] = "default"
    models: list[str] = Field(default_factory=lambda: ["default"], min_length=1)
    datasets: list[str] = Field(default_factory=lambda: ["rotten-tomatoes"], min_length=1)
    patterns: list[str] = Field(default_factory=lambda: ["hp"], min_length=1)
    sparsities: list[float] = Field(min_length=1)
    from_dense: bool = False
    seed: int = Field(0, ge=0)
    max_length: int = Field(64, ge=2)
    text_column: str = "text"
    label_column: str = "label"
    pattern_params: PatternParams = PatternParams()
    recipe: Recipe = Recipe()

    @field_validator("sparsities")
    @classmethod
    def _sparsities(cls, v: list[float]) -> list[float]:
        bad = [s for s in v if not (0.0 < s < 1.0)]
        if bad:
            raise ValueError(f"{bad} outside (0, 1): a sparsity is the fraction of pruned "
                             "weights (the dense point is always included)")
        return sorted(set(v))

    @model_validator(mode="after")
    def _nm_m_needs_nm(self):
        if "nm_m" in self.pattern_params.model_fields_set and "nm" not in self.patterns:
            raise ValueError(f"pattern_params.nm_m is the m of the nm pattern, and patterns "
                             f"{self.patterns} has none: add nm to patterns, or drop nm_m")
        return self


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and check a sweep file: YAML, keys and values, and what can be checked without
    training (every pattern reaches every sparsity with its parameters; local model folders
    and dataset files exist).

    Raises:
        FitformerError: a missing, unreadable or malformed file; the message names the file,
            the key and the fix.
    """
    import yaml

    from fitformer.sparsity.patterns.registry import pattern_names

    p = Path(path).expanduser()
    if not p.is_file():
        what = "is a folder" if p.is_dir() else "does not exist"
        raise FitformerError(f"sweep file {p} {what}; give a YAML file "
                             "(see `fitformer sweep --help` for its keys).")
    try:
        raw = yaml.safe_load(p.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise FitformerError(f"sweep file {p} is not valid YAML ({exc}).") from None
    if not isinstance(raw, dict):
        raise FitformerError(f"sweep file {p} must be a YAML mapping with at least "
                             "'sparsities: [...]'.")
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{'.'.join(str(x) for x in e['loc']) or '(top)'}: {e['msg']}"
                 for e in exc.errors()]
        raise FitformerError(f"sweep file {p}: " + "; ".join(lines)
                             + ". See `fitformer sweep --help` for the keys.") from None
    unknown = [x for x in spec.patterns if x not in pattern_names()]
    if unknown:
        raise FitformerError(f"sweep file {p}: patterns {unknown} are unknown; choose from "
                             f"{', '.join(pattern_names())}.")
    for chain in chains(spec):
        for pt in chain.points:
            try:
                pt.spec.make_pattern().plan((384, 384), pt.spec.sparsity)
            except FitformerError as exc:
                raise FitformerError(f"sweep file {p}: {pt.label}: {exc}") from None
    for m in spec.models:
        if _looks_local(m) and not Path(m).expanduser().is_dir():
            raise FitformerError(f"sweep file {p}: model {m!r} is not a folder; give a "
                                 "save_pretrained folder, a hub id or 'default'.")
    for d in spec.datasets:
        if _looks_local(d) and not Path(d).expanduser().is_file():
            raise FitformerError(f"sweep file {p}: dataset {d!r} is not a file; give "
                                 "rotten-tomatoes or a CSV/TSV/JSONL file.")
    return spec


def _looks_local(name: str) -> bool:
    return (name.startswith((".", "/", "~")) or Path(name).suffix.lower() in
            (".csv", ".tsv", ".jsonl", ".json"))


def chains(spec: SweepSpec) -> list[Chain]:
    """The sweep's chains: one per (model, dataset, pattern) through the sorted sparsities,
    or, with ``from_dense``, one per point."""
    from fitformer.sparsity.prune import PruneSpec
    from fitformer.training.loop import DistillConfig

    r = spec.recipe
    distill = (None if r.distill == "none" else
               DistillConfig(r.distill, temperature=r.distill_temperature,
                             alpha=r.distill_alpha, augment=r.distill_augment))
    pp = spec.pattern_params
    out = []
    for model in spec.models:
        for dataset in spec.datasets:
            dense = DenseJob(model=model, dataset=dataset, budget=spec.budget, seed=spec.seed,
                             max_length=spec.max_length, text_column=spec.text_column,
                             label_column=spec.label_column)
            for pattern in spec.patterns:
                points = tuple(
                    PointJob(PruneSpec(pattern, s, block=tuple(pp.block), banks=pp.banks,
                                       level2_density=pp.level2_density, nm_m=pp.nm_m),
                             budget=spec.budget, distill=distill,
                             epochs_per_point=r.epochs_per_point, learning_rate=r.lr)
                    for s in spec.sparsities)
                out.append(Chain(f"{model} / {dataset} / {pattern}", dense, points))
    # A model, dataset or pattern listed twice would give two tasks training one run.
    return split_from_dense(out) if spec.from_dense else unique_chains(out)


def run_sweep(spec: SweepSpec, *, executor: Executor | None = None,
              out_dir: Path = Path("sweep-out"),
              log: Callable[[str], None] = print) -> list[dict]:
    """Run (or resume) the sweep and write ``sweep.json``, ``sweep.md`` and the plot.

    Returns:
        One row per finished point: ``model``, ``dataset``, ``pattern``,
        ``requested_sparsity``, ``achieved_sparsity``, ``dev`` / ``test`` (per precision),
        ``collapsed``, ``steps``, ``run_dir``, ``torch_threads``.

    Raises:
        FitformerError: see :func:`fitformer.sparsity.executors.run_chains`.
    """
    todo = chains(spec)
    results = run_chains(todo, executor or Executor(), log=log)
    rows = []
    for chain, points in zip(todo, results, strict=True):
        model, dataset, _ = chain.name.split(" / ", 2)
        for r in points:
            m = r.metrics
            run = json.loads((r.run_dir / "run.json").read_text())
            rows.append({
                "model": model, "dataset": dataset, "pattern": r.point.spec.pattern,
                "requested_sparsity": r.point.spec.sparsity,
                "achieved_sparsity": m["sparsity"]["overall"],
                "dev": m["accuracy"]["dev"], "test": m["accuracy"]["test"],
                "collapsed": bool((m.get("collapsed") or {}).get("fp32")),
                "steps": m.get("steps"), "run_dir": str(r.run_dir),
                "torch_threads": run.get("torch_threads")})
    rows.sort(key=lambda x: (x["model"], x["dataset"], x["pattern"], x["requested_sparsity"]))
    write_report(spec, rows, out_dir)
    return rows


def write_report(spec: SweepSpec, rows: list[dict], out_dir: Path) -> None:
    """``sweep.json`` (the spec and the rows), ``sweep.md`` (a table) and
    ``img/sweep-accuracy.png``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "sweep.json").write_text(json.dumps(
        {"spec": spec.model_dump(mode="json"), "rows": rows}, indent=2) + "\n")
    lines = ["# Sweep", "",
             f"Budget `{spec.budget}`; points "
             + ("each from the dense fine-tune" if spec.from_dense else
                "chained through the sparsities from the dense fine-tune")
             + f"; recipe {spec.recipe.model_dump()}.", "",
             "![dev accuracy vs sparsity](img/sweep-accuracy.png)", "",
             "| model | dataset | pattern | sparsity (req. / achieved) | dev fp32 | dev fx16 | "
             "dev fx8 | test fp32 | collapsed | run |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['dataset']} | {r['pattern']} | "
                     f"{r['requested_sparsity']:g} / {r['achieved_sparsity']:.4f} | "
                     f"{r['dev']['fp32']:.4f} | {r['dev']['fx16']:.4f} | {r['dev']['fx8']:.4f} | "
                     f"{r['test']['fp32']:.4f} | {'yes' if r['collapsed'] else 'no'} | "
                     f"{Path(r['run_dir']).name} |")
    (out_dir / "sweep.md").write_text("\n".join(lines) + "\n")
    _plot(rows, out_dir / "img" / "sweep-accuracy.png")


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    series: dict[tuple, list[dict]] = {}
    for r in rows:
        series.setdefault((r["model"], r["dataset"], r["pattern"]), []).append(r)
    for (model, dataset, pattern), pts in series.items():
        ax.plot([p["achieved_sparsity"] for p in pts], [p["dev"]["fp32"] for p in pts], "-o",
                label=f"{pattern} ({model}, {dataset})")
    ax.set_xlabel("achieved sparsity of the prunable matrices")
    ax.set_ylabel("dev accuracy (fp32)")
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
