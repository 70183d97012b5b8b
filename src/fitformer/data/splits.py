"""Split rules shared by every dataset (design.md §8).

- **Duplicate key**: NFKC-normalise, lowercase, collapse whitespace. Texts with the same key
  are one example; a key seen with two different labels is dropped entirely (its label is
  ambiguous), otherwise the first occurrence is kept.
- **Stratified split** (classification): exact test and dev sizes, each class represented in
  proportion to its share (largest-remainder rounding), drawn with a seeded permutation.
- **Grouped split** (translation): every pair whose source sentence has the same key goes to
  the same split, so a test sentence is never seen in training with another translation.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def duplicate_key(text: str) -> str:
    """The key under which two texts count as duplicates: NFKC, lowercase, single spaces."""
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


@dataclass(frozen=True)
class DedupResult:
    """Indices kept by :func:`deduplicate` and what was dropped.

    Attributes:
        keep: indices into the input, in input order.
        duplicates_dropped: later copies of a key with one consistent label.
        conflicts_dropped: every example whose key appeared with more than one label.
    """

    keep: tuple[int, ...]
    duplicates_dropped: int
    conflicts_dropped: int


def deduplicate(texts: Sequence[str], labels: Sequence[object]) -> DedupResult:
    """Drop duplicate texts (by :func:`duplicate_key`) and texts with conflicting labels."""
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    first: dict[str, int] = {}
    label_sets: dict[str, set] = {}
    for i, (t, y) in enumerate(zip(texts, labels, strict=True)):
        k = duplicate_key(t)
        first.setdefault(k, i)
        label_sets.setdefault(k, set()).add(y)
    conflicted = {k for k, ys in label_sets.items() if len(ys) > 1}
    keep = tuple(sorted(i for k, i in first.items() if k not in conflicted))
    conflicts = sum(1 for t in texts if duplicate_key(t) in conflicted)
    return DedupResult(keep, len(texts) - len(keep) - conflicts, conflicts)


def _stratified_counts(class_sizes: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` over classes in proportion to ``class_sizes`` (largest remainder)."""
    share = class_sizes * total / class_sizes.sum()
    counts = np.floor(share).astype(int)
    order = np.argsort(-(share - counts), kind="stable")
    counts[order[: total - counts.sum()]] += 1
    return np.minimum(counts, class_sizes)


def stratified_split(labels: Sequence[int], sizes: Sequence[int], seed: int = 0
                     ) -> list[np.ndarray]:
    """Stratified split of example indices into ``len(sizes) + 1`` parts.

    Args:
        labels: integer class id per example, length n.
        sizes: exact sizes of the first parts (e.g. ``(test, dev)``); the last part (train)
            gets the rest.
        seed: seed of the numpy permutation.

    Returns:
        One sorted int64 index array per part; disjoint, covering ``range(n)``.

    Raises:
        ValueError: ``sum(sizes)`` exceeds ``n``.
    """
    y = np.asarray(labels)
    n = len(y)
    if sum(sizes) > n:
        raise ValueError(f"split sizes {tuple(sizes)} exceed {n} examples")
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    pools = {c: rng.permutation(np.flatnonzero(y == c)) for c in classes}
    remaining = np.array([len(pools[c]) for c in classes])
    parts: list[np.ndarray] = []
    for size in sizes:
        counts = _stratified_counts(remaining, size)
        # If a tiny class ran out, top up from the largest classes.
        short = size - counts.sum()
        for j in np.argsort(-(remaining - counts), kind="stable"):
            take = min(short, remaining[j] - counts[j])
            counts[j] += take
            short -= take
        part = []
        for j, c in enumerate(classes):
            used = len(pools[c]) - remaining[j]
            part.append(pools[c][used : used + counts[j]])
        remaining = remaining - counts
        parts.append(np.sort(np.concatenate(part)).astype(np.int64))
    rest = [pools[c][len(pools[c]) - remaining[j]:] for j, c in enumerate(classes)]
    parts.append(np.sort(np.concatenate(rest)).astype(np.int64))
    return parts


def grouped_split(groups: Sequence[str], min_sizes: Sequence[int], seed: int = 0
                  ) -> list[np.ndarray]:
    """Split example indices so that all examples of one group land in the same part.

    Groups are visited in a seeded random order; part ``i`` takes whole groups until it
    holds at least ``min_sizes[i]`` examples; the last part (train) takes the rest.

    Returns:
        One sorted int64 index array per part (``len(min_sizes) + 1`` parts).
    """
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    keys = list(members)
    order = np.random.default_rng(seed).permutation(len(keys))
    parts: list[list[int]] = [[] for _ in range(len(min_sizes) + 1)]
    p = 0
    for j in order:
        while p < len(min_sizes) and len(parts[p]) >= min_sizes[p]:
            p += 1
        parts[p].extend(members[keys[j]])
    return [np.sort(np.asarray(x, dtype=np.int64)) for x in parts]
