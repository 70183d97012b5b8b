"""The dense fine-tune: the reference every accuracy constraint is measured against.

``finetune(model, dataset)`` trains the pretrained encoder with a new classification head on
the training split, evaluates dev and test accuracy, and writes a run directory
(design.md §9). The run is cached by its key: a second call returns the cached run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from fitformer.data import load_dataset
from fitformer.data.classification import ClassificationDataset
from fitformer.errors import FitformerError
from fitformer.models.fixed_point import PRECISIONS
from fitformer.models.layers import linear_layers
from fitformer.models.loading import (
    load_classifier,
    load_tokenizer,
    quiet_transformers,
    resolve_model,
)
from fitformer.training.budgets import get_budget
from fitformer.training.evaluation import accuracy_at_precisions
from fitformer.training.loop import Encoded, TrainConfig, train_classifier
from fitformer.training.runs import (
    METRICS_SCHEMA_VERSION,
    RECIPE_VERSION,
    Uncached,
    commit_run,
    find_run,
    load_run_info,
    start_partial,
    write_json,
)

#: The dense recipe (design.md §8 reference: 2 epochs at 5e-5 reached 0.850 dev / 0.836 test).
DENSE_RECIPE = TrainConfig(epochs=3.0, batch_size=32, learning_rate=1e-4, weight_decay=0.01,
                           warmup_ratio=0.06, max_length=64, seed=0)


@dataclass(frozen=True)
class RunResult:
    """A finished (or cached) run: its folder, key and metrics."""

    path: Path
    key: dict
    metrics: dict
    cached: bool


def dense_key(model_ref, data, budget_name: str, config: TrainConfig) -> dict:
    """The run key of a dense fine-tune (design.md §9)."""
    return {
        "kind": "finetune",
        "recipe_version": RECIPE_VERSION,
        "task": data.task,
        "model": model_ref.key(),
        "dataset": data.name,
        "data_split": data.data_split,
        "pattern": "dense",
        "pattern_params": {},
        "density": 1.0,
        "hp_split": None,
        "pruner": None,
        "budget": budget_name,
        "max_length": config.max_length,
        "seed": config.seed,
        "recipe": config.as_key(),
    }


MAX_POSITIONS = 512  # BERT-family position embeddings


def encode_splits(tokenizer, data: ClassificationDataset, budget, max_length: int
                  ) -> tuple[Encoded, Encoded, Encoded]:
    """Tokenised ``(train, dev, test)``, each capped by the budget."""
    return tuple(Encoded(tokenizer, data.split(s).subset(getattr(budget, f"{s}_examples")),
                         max_length) for s in ("train", "dev", "test"))


def _collapse_fields(table: dict) -> dict:
    """The majority-class fields of ``metrics.json``: the majority rate per split, classes
    predicted, per-example correctness (dev and test, fp32 and the fixed-point ones), and
    ``collapsed`` per precision (:func:`~fitformer.training.evaluation.collapse_reason`)."""
    from fitformer.training.evaluation import collapse_reason

    if "majority_rate" not in table:
        return {}
    maj = table["majority_rate"]
    collapsed = {p: collapse_reason(a, maj.get("dev"),
                                    table["predicted_classes"]["dev"].get(p))
                 for p, a in table["accuracy"]["dev"].items()}
    return {"majority_rate": maj, "predicted_classes": table["predicted_classes"],
            "collapsed": collapsed, "per_example_correct": table["correct"],
            **{k: table[k] for k in ("macro_f1", "majority_macro_f1") if k in table},
            **({"per_example_prediction": table["predictions"]} if "predictions" in table
               else {})}


def run_metrics(task: str, table: dict, trained, started: float, splits: tuple, budget,
                *, sparsity: dict, hp_split: dict | None, seed: int, **extra) -> dict:
    """The ``metrics.json`` of a finished run (design.md §9 schema plus run details).

    Args:
        table: from :func:`~fitformer.training.evaluation.accuracy_at_precisions`.
        trained: the :class:`~fitformer.training.loop.TrainResult`.
        started: ``time.perf_counter()`` when the run began.
        splits: the tokenised ``(train, dev, test)``.
        budget: the :class:`~fitformer.training.budgets.Budget`.
    """
    window = max(1, len(trained.losses) // 10)
    train, dev, test = splits
    return {
        "schema_version": METRICS_SCHEMA_VERSION,
        "task": task,
        "accuracy": table["accuracy"],
        "loss": {"train_first": sum(trained.losses[:window]) / window,
                 "train_last": sum(trained.losses[-window:]) / window,
                 "dev": table["loss"]["dev"]["fp32"], "test": table["loss"]["test"]["fp32"]},
        "sparsity": sparsity,
        "hp_split": hp_split,
        **_collapse_fields(table),
        "examples_per_s": trained.train_examples_per_s,
        "wall_time_s": time.perf_counter() - started,
        "train_time_s": trained.wall_time_s,
        "steps": trained.steps,
        "resumed_from_step": trained.resumed_from_step,
        "split_sizes": {"train": len(train), "dev": len(dev), "test": len(test)},
        "budget": budget.name,
        "smoke": budget.smoke,
        "seed": seed,
        **extra,
    }


def save_run(partial: Path, key: dict, net, tokenizer, metrics: dict,
             extra_json: dict[str, dict] | None = None) -> Path:
    """Write model, tokenizer, extra JSON files and ``metrics.json`` into ``partial`` and
    move it into its run directory (``metrics.json`` last: it marks a complete run)."""
    with quiet_transformers():
        net.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
    for name, obj in (extra_json or {}).items():
        write_json(partial / name, obj)
    write_json(partial / "metrics.json", metrics)
    return commit_run(partial, key)


def check_training_flags(*, seed: int, max_length: int, epochs: float | None = None,
                         learning_rate: float | None = None) -> None:
    """Reject flag values that would train nothing, diverge or overflow.

    Raises:
        FitformerError: the flag and the accepted range.
    """
    import math

    if not 0 <= seed < 2**32:
        raise FitformerError(f"--seed {seed} must be in [0, 2**32).")
    if not 8 <= max_length <= MAX_POSITIONS:
        raise FitformerError(f"--max-length {max_length} must be in [8, {MAX_POSITIONS}] "
                             "tokens (the model's position embeddings).")
    if epochs is not None and not (math.isfinite(epochs) and epochs > 0):
        raise FitformerError(f"--epochs {epochs} must be a positive number, e.g. 3.")
    if learning_rate is not None and not (math.isfinite(learning_rate)
                                          and 0 < learning_rate <= 1):
        raise FitformerError(f"--lr {learning_rate} must be in (0, 1], e.g. 1e-4.")


def complete_precisions(path: Path, metrics: dict, data: ClassificationDataset,
                        budget_name: str, max_length: int) -> dict:
    """Fill fixed-point accuracies missing from a cached run's ``metrics.json`` (runs made
    before precision evaluation existed); evaluation only, written back atomically."""
    missing = [p for p in PRECISIONS
               if any(metrics["accuracy"][s].get(p) is None for s in ("dev", "test"))]
    if not missing:
        return metrics
    b = get_budget(budget_name)
    ref = resolve_model(str(path))
    tokenizer = load_tokenizer(ref)
    net = load_classifier(ref)
    train, dev, test = encode_splits(tokenizer, data, b, max_length)
    table = accuracy_at_precisions(net, {"dev": dev, "test": test}, train, missing)
    for s in ("dev", "test"):
        metrics["accuracy"][s].update(table["accuracy"][s])
    write_json(path / "metrics.json", metrics)
    return metrics


def complete_macro_f1(path: Path, metrics: dict, data: ClassificationDataset) -> dict:
    """``metrics`` with ``macro_f1`` (``{split: {precision: f1}}``, 0-1) and
    ``majority_macro_f1`` (``{split: f1}``) for dev and test at every precision its
    ``accuracy`` has, filled in for a cached classification run that lacks them and
    written back to its ``metrics.json`` (atomically).

    Computed from what the run stored: its ``per_example_prediction``; else, on a
    two-class dataset, its ``per_example_correct`` (a wrong answer is the other class);
    else by evaluating the run again on its own budget's dev and test splits at its
    ``max_length`` (evaluation only, a pass per split and precision).

    Args:
        path: the run directory; ``data``: the dataset it was trained on.

    Raises:
        FitformerError: the run cannot be read or evaluated.
    """
    from fitformer.training.evaluation import macro_f1, majority_baseline

    splits = ("dev", "test")
    precisions = sorted({p for s in splits for p, a in metrics["accuracy"][s].items()
                         if a is not None})
    have = metrics.get("macro_f1") or {}
    if all(have.get(s, {}).get(p) is not None for s in splits for p in precisions) \
            and all((metrics.get("majority_macro_f1") or {}).get(s) is not None
                    for s in splits):
        return metrics
    run, _ = load_run_info(path)
    b = get_budget(run.get("budget", "default"))
    labels = {s: list(data.split(s).subset(getattr(b, f"{s}_examples")).labels)
              for s in splits}
    stored = metrics.get("per_example_prediction") or {}
    correct = metrics.get("per_example_correct") or {}
    f1: dict[str, dict] = {s: {} for s in splits}
    missing = []
    for p in precisions:
        for s in splits:
            pred = stored.get(s, {}).get(p)
            if pred is not None:
                pred = [int(x) for x in pred.split(",")] if pred else []
            elif len(data.label_names) == 2 and correct.get(s, {}).get(p) is not None:
                pred = [y if c == "1" else 1 - y for y, c in zip(labels[s], correct[s][p],
                                                                 strict=False)]
            if pred is None or len(pred) != len(labels[s]):
                missing.append(p)
                break
            f1[s][p] = macro_f1(labels[s], pred)
    if missing:
        ref = resolve_model(str(path))
        net = load_classifier(ref)
        train, dev, test = encode_splits(load_tokenizer(ref), data, b,
                                         run.get("max_length", 64))
        table = accuracy_at_precisions(net, {"dev": dev, "test": test}, train,
                                       sorted(set(missing)))
        for s in splits:
            f1[s].update(table["macro_f1"][s])
        metrics.setdefault("per_example_prediction", {})
        for s in splits:
            metrics["per_example_prediction"].setdefault(s, {}).update(table["predictions"][s])
    metrics["macro_f1"] = f1
    metrics["majority_macro_f1"] = {s: majority_baseline(labels[s], "macro_f1")
                                    for s in splits}
    write_json(path / "metrics.json", metrics)
    return metrics


def finetune(model: str = "default", dataset: str = "rotten-tomatoes", *,
             task: str = "classification", budget: str = "default", seed: int = 0,
             max_length: int = 64, epochs: float | None = None,
             learning_rate: float | None = None, text_column: str = "text",
             label_column: str = "label", force: bool = False,
             cached_only: bool = False) -> RunResult | Uncached:
    """Fine-tune ``model`` densely on ``dataset`` and write (or reuse) its run directory.

    Args:
        model: ``default`` (MiniLM from the cache), a ``save_pretrained`` folder or a hub id.
        dataset: ``rotten-tomatoes``, a local file or ``hf:NAME``.
        task: ``classification``, or ``translation`` (the encoder-decoder trained from
            scratch on ``tatoeba-en-fr``: :func:`~fitformer.training.translation.
            finetune_translation`).
        budget: ``tiny``, ``quick`` or ``default`` (see :mod:`fitformer.training.budgets`).
        seed: seeds head initialisation, dropout and data order.
        max_length: tokens per sequence (part of the key; design.md §9 uses 64).
        epochs, learning_rate: override the dense recipe.
        text_column, label_column: columns of a local dataset file.
        force: retrain even if a cached run exists.
        cached_only: return :class:`~fitformer.training.runs.Uncached` (falsy: the run's
            key and the steps its checkpoint holds) instead of training when the run is
            not cached.

    Returns:
        :class:`RunResult`; ``metrics`` follows the ``metrics.json`` schema of design.md §9.

    Raises:
        FitformerError: bad task, model, dataset or budget (message names the fix).
    """
    if task == "translation":
        from fitformer.training.translation import finetune_translation

        if model != "default":
            raise FitformerError(f"--model {model}: translation trains its encoder-decoder "
                                 "from scratch; leave --model at default.")
        return finetune_translation("tatoeba-en-fr" if dataset == "rotten-tomatoes"
                                    else dataset, budget=budget, seed=seed,
                                    max_length=max_length, epochs=epochs,
                                    learning_rate=learning_rate, force=force,
                                    cached_only=cached_only)
    if task != "classification":
        raise FitformerError(f"unknown task {task!r}; choose classification or translation.")
    b = get_budget(budget)
    check_training_flags(seed=seed, max_length=max_length, epochs=epochs,
                         learning_rate=learning_rate)
    data = load_dataset(dataset, task=task, text_column=text_column, label_column=label_column)
    assert isinstance(data, ClassificationDataset)
    ref = resolve_model(model)
    config = replace(DENSE_RECIPE, seed=seed, max_length=max_length,
                     epochs=b.dense_epochs if epochs is None else epochs,
                     learning_rate=DENSE_RECIPE.learning_rate if learning_rate is None
                     else learning_rate)
    key = dense_key(ref, data, budget, config)
    cached = find_run(key)
    if cached is not None and not force:
        run, metrics = load_run_info(cached)
        metrics = complete_precisions(cached, metrics, data, budget, max_length)
        return RunResult(cached, run, metrics, cached=True)
    if cached_only:
        return Uncached(key)

    started = time.perf_counter()
    torch.manual_seed(seed)
    tokenizer = load_tokenizer(ref)
    net = load_classifier(ref, data.label_names)
    train, dev, test = encode_splits(tokenizer, data, b, max_length)
    partial = start_partial(key, force)
    trained = train_classifier(net, train, config, checkpoint=partial / "checkpoint.pt",
                               description=f"dense fine-tune ({budget})")
    table = accuracy_at_precisions(net, {"dev": dev, "test": test}, train)
    per_layer = {info.name: 0.0 for info in linear_layers(net) if info.prunable}
    metrics = run_metrics(data.task, table, trained, started, (train, dev, test), b,
                          sparsity={"overall": 0.0, "per_layer": per_layer}, hp_split=None,
                          seed=seed)
    path = save_run(partial, key, net, tokenizer, metrics)
    return RunResult(path, key, metrics, cached=False)
