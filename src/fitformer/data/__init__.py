"""Data: fetching the real inputs, dataset loaders and the split rules."""

from __future__ import annotations

from pathlib import Path

from fitformer.data.classification import (
    ClassificationDataset,
    TextSplit,
    load_hf,
    load_local,
    load_rotten_tomatoes,
)
from fitformer.data.fetch import SOURCES
from fitformer.data.translation import PairSplit, TranslationDataset, load_tatoeba_en_fr
from fitformer.errors import FitformerError

TASKS = ("classification", "translation")
BUILTIN_DATASETS = {"rotten-tomatoes": "classification", "tatoeba-en-fr": "translation"}

__all__ = [
    "BUILTIN_DATASETS", "ClassificationDataset", "PairSplit", "SOURCES", "TASKS", "TextSplit",
    "TranslationDataset", "load_dataset",
]


def load_dataset(spec: str, *, task: str | None = None, text_column: str = "text",
                 label_column: str = "label", seed: int = 0
                 ) -> ClassificationDataset | TranslationDataset:
    """Load a dataset by name, path or ``hf:NAME[:CONFIG]``, split by design.md §8.

    Args:
        spec: ``rotten-tomatoes``, ``tatoeba-en-fr``, a local ``.csv``/``.tsv``/``.jsonl``
            file, or ``hf:NAME[:CONFIG]`` (Hugging Face ``datasets``; needs a network).
        task: ``classification`` or ``translation``; checked against the dataset.
        text_column, label_column: columns of a local or ``datasets`` source.
        seed: split seed (design.md §8 fixes 0).

    Raises:
        FitformerError: unknown name, missing file, wrong task, or any loader error.
    """
    if task is not None and task not in TASKS:
        raise FitformerError(f"unknown task {task!r}; choose from {', '.join(TASKS)}.")
    if spec in BUILTIN_DATASETS:
        if task is not None and task != BUILTIN_DATASETS[spec]:
            raise FitformerError(
                f"{spec} is a {BUILTIN_DATASETS[spec]} dataset, not {task}; pass "
                f"--task {BUILTIN_DATASETS[spec]} or another dataset."
            )
        if spec == "rotten-tomatoes":
            return load_rotten_tomatoes(seed=seed)
        return load_tatoeba_en_fr(seed=seed)
    if task == "translation":
        raise FitformerError(
            f"translation datasets other than tatoeba-en-fr are not supported yet ({spec})."
        )
    if spec.startswith("hf:"):
        return load_hf(spec, text_column=text_column, label_column=label_column, seed=seed)
    path = Path(spec).expanduser()
    if path.exists() or path.suffix or "/" in spec:
        return load_local(path, text_column=text_column, label_column=label_column, seed=seed)
    raise FitformerError(
        f"unknown dataset {spec!r}: use {', '.join(BUILTIN_DATASETS)}, a .csv/.tsv/.jsonl "
        "file, or hf:NAME[:CONFIG]."
    )
