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


#: Datasets already loaded in this process, by :func:`_memo_key` (a query re-reads the same
#: dataset for every cached run it looks up: issue 18 measured 86 reads in one select).
_LOADED: dict[tuple, ClassificationDataset | TranslationDataset] = {}
_LOADED_MAX = 4


def _memo_key(spec: str, task, text_column: str, label_column: str, seed: int) -> tuple | None:
    """What identifies a load: the arguments and, for files, their size and mtime (an edited
    file is read again); ``None`` (not memoised) for ``hf:`` sources."""
    from fitformer.paths import fitformer_home

    if spec.startswith("hf:"):
        return None
    if spec in BUILTIN_DATASETS:
        src = SOURCES[spec]
        files = [src.dest / f for f in src.members.values()]
    else:
        files = [Path(spec).expanduser()]
    try:
        stamp = tuple((str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns)
                      for f in files)
    except OSError:
        return None                     # missing: the loader raises its own error
    return (spec, task, text_column, label_column, seed, str(fitformer_home()), stamp)


def load_dataset(spec: str, *, task: str | None = None, text_column: str = "text",
                 label_column: str = "label", seed: int = 0
                 ) -> ClassificationDataset | TranslationDataset:
    """Load a dataset by name, path or ``hf:NAME[:CONFIG]``, split by design.md §8.

    Loads are memoised per process (treat the result as read-only): a file is read again
    when its size or modification time changes.

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
    key = _memo_key(spec, task, text_column, label_column, seed)
    if key is not None and key in _LOADED:
        return _LOADED[key]
    data = _load(spec, task, text_column, label_column, seed)
    if key is not None:
        if len(_LOADED) >= _LOADED_MAX:
            _LOADED.pop(next(iter(_LOADED)))
        _LOADED[key] = data
    return data


def _load(spec: str, task: str | None, text_column: str, label_column: str, seed: int
          ) -> ClassificationDataset | TranslationDataset:
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
