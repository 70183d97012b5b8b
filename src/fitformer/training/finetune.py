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

from fitformer._version import __version__
from fitformer.data import load_dataset
from fitformer.data.classification import ClassificationDataset
from fitformer.errors import FitformerError
from fitformer.models.layers import linear_layers
from fitformer.models.loading import (
    load_classifier,
    load_tokenizer,
    quiet_transformers,
    resolve_model,
)
from fitformer.training.budgets import get_budget
from fitformer.training.loop import Encoded, TrainConfig, evaluate_classifier, train_classifier
from fitformer.training.runs import (
    METRICS_SCHEMA_VERSION,
    commit_run,
    find_run,
    load_run_info,
    partial_path,
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
        "fitformer_version": __version__,
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


def _accuracy_block(fp32: float) -> dict:
    # Fixed-point accuracies are measured by the precision stage (design.md §4); a dense
    # fine-tune records fp32 only until then.
    return {"fp32": fp32, "fx16": None, "fx8": None}


def finetune(model: str = "default", dataset: str = "rotten-tomatoes", *,
             task: str = "classification", budget: str = "default", seed: int = 0,
             max_length: int = 64, epochs: float | None = None,
             learning_rate: float | None = None, text_column: str = "text",
             label_column: str = "label", force: bool = False) -> RunResult:
    """Fine-tune ``model`` densely on ``dataset`` and write (or reuse) its run directory.

    Args:
        model: ``default`` (MiniLM from the cache), a ``save_pretrained`` folder or a hub id.
        dataset: ``rotten-tomatoes``, a local file or ``hf:NAME``.
        task: ``classification`` (``translation`` arrives with the encoder-decoder path).
        budget: ``tiny``, ``quick`` or ``default`` (see :mod:`fitformer.training.budgets`).
        seed: seeds head initialisation, dropout and data order.
        max_length: tokens per sequence (part of the key; design.md §9 uses 64).
        epochs, learning_rate: override the dense recipe.
        text_column, label_column: columns of a local dataset file.
        force: retrain even if a cached run exists.

    Returns:
        :class:`RunResult`; ``metrics`` follows the ``metrics.json`` schema of design.md §9.

    Raises:
        FitformerError: bad task, model, dataset or budget (message names the fix).
    """
    if task == "translation":
        raise FitformerError(
            "finetune --task translation is not available yet: the encoder-decoder "
            "translation path is issue 9; use --task classification."
        )
    if task != "classification":
        raise FitformerError(f"unknown task {task!r}; choose classification or translation.")
    b = get_budget(budget)
    data = load_dataset(dataset, task=task, text_column=text_column, label_column=label_column)
    assert isinstance(data, ClassificationDataset)
    ref = resolve_model(model)
    config = replace(DENSE_RECIPE, seed=seed, max_length=max_length,
                     epochs=b.dense_epochs if epochs is None else epochs,
                     learning_rate=learning_rate or DENSE_RECIPE.learning_rate)
    key = dense_key(ref, data, budget, config)
    cached = find_run(key)
    if cached is not None and not force:
        run, metrics = load_run_info(cached)
        return RunResult(cached, run, metrics, cached=True)

    started = time.perf_counter()
    torch.manual_seed(seed)
    tokenizer = load_tokenizer(ref)
    net = load_classifier(ref, data.label_names)
    train = Encoded(tokenizer, data.train.subset(b.train_examples), max_length)
    dev = Encoded(tokenizer, data.dev.subset(b.dev_examples), max_length)
    test = Encoded(tokenizer, data.test.subset(b.test_examples), max_length)
    partial = partial_path(key)
    if force and partial.exists():
        (partial / "checkpoint.pt").unlink(missing_ok=True)
    partial.mkdir(parents=True, exist_ok=True)
    write_json(partial / "run.json", key)
    trained = train_classifier(net, train, config, checkpoint=partial / "checkpoint.pt",
                               description=f"dense fine-tune ({budget})")
    dev_r = evaluate_classifier(net, dev)
    test_r = evaluate_classifier(net, test)
    per_layer = {info.name: 0.0 for info in linear_layers(net) if info.prunable}
    window = max(1, len(trained.losses) // 10)
    metrics = {
        "schema_version": METRICS_SCHEMA_VERSION,
        "task": data.task,
        "accuracy": {"dev": _accuracy_block(dev_r.accuracy),
                     "test": _accuracy_block(test_r.accuracy)},
        "loss": {
            "train_first": sum(trained.losses[:window]) / window,
            "train_last": sum(trained.losses[-window:]) / window,
            "dev": dev_r.loss, "test": test_r.loss,
        },
        "sparsity": {"overall": 0.0, "per_layer": per_layer},
        "hp_split": None,
        "examples_per_s": trained.train_examples_per_s,
        "eval_examples_per_s": test_r.examples_per_s,
        "wall_time_s": time.perf_counter() - started,
        "train_time_s": trained.wall_time_s,
        "steps": trained.steps,
        "resumed_from_step": trained.resumed_from_step,
        "split_sizes": {"train": len(train), "dev": len(dev), "test": len(test)},
        "budget": budget,
        "smoke": b.smoke,
        "seed": seed,
    }
    with quiet_transformers():
        net.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
    write_json(partial / "metrics.json", metrics)
    path = commit_run(partial, key)
    return RunResult(path, key, metrics, cached=False)
