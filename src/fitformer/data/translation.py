"""Tatoeba English-French sentence pairs (design.md §8), with attribution kept.

Source: ``fra.txt`` of the Anki/manythings export of Tatoeba (2020-08-23), shipped in the
sdist ``nmt==0.0.6``; 178,009 tab-separated lines ``english, french, attribution``. Licence:
CC-BY 2.0 (France); every pair keeps its attribution line (sentence ids and authors).

Split: grouped by the English sentence's duplicate key (:func:`fitformer.data.splits.
duplicate_key`), so all translations of one English sentence land in one split; groups in
a seeded random order; test takes whole groups until it holds at least 1,000 pairs, then
dev likewise, train the rest.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from fitformer.data.fetch import require
from fitformer.data.splits import duplicate_key, grouped_split
from fitformer.errors import FitformerError

BUILTIN = ("tatoeba-en-fr",)
LICENSE = ("Tatoeba English-French, CC-BY 2.0 (France); attribution: tatoeba.org and "
           "www.manythings.org/anki; per-pair authors in `attribution`")


@dataclass(frozen=True)
class PairSplit:
    """One split of sentence pairs: ``sources[i]`` translates to ``targets[i]``."""

    sources: tuple[str, ...]
    targets: tuple[str, ...]
    attribution: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.sources)


@dataclass(frozen=True)
class TranslationDataset:
    """A parallel corpus split into train / dev / test (grouped by source sentence)."""

    name: str
    source_lang: str
    target_lang: str
    train: PairSplit
    dev: PairSplit
    test: PairSplit
    data_split: str
    dropped: dict[str, int]
    license: str = LICENSE

    task = "translation"

    def summary(self) -> dict:
        return {
            "dataset": self.name,
            "task": self.task,
            "languages": f"{self.source_lang}->{self.target_lang}",
            "splits": {s: {"size": len(getattr(self, s)),
                           "source_groups": len({duplicate_key(t)
                                                 for t in getattr(self, s).sources})}
                       for s in ("train", "dev", "test")},
            "dropped": dict(self.dropped),
            "data_split": self.data_split,
            "license": self.license,
        }


def load_tatoeba_en_fr(seed: int = 0, test_pairs: int = 1000, dev_pairs: int = 1000
                       ) -> TranslationDataset:
    """Tatoeba English->French with the grouped split.

    Raises:
        FitformerError: not fetched yet (run ``fitformer fetch``) or the file is malformed.
    """
    path = require("tatoeba-en-fr") / "fra.txt"
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FitformerError(f"{path} is not UTF-8; run `fitformer fetch` again.") from None
    src, tgt, attr, malformed = [], [], [], 0
    for line in text.splitlines():
        cols = line.split("\t")
        if len(cols) < 2 or not cols[0].strip() or not cols[1].strip():
            malformed += 1
            continue
        src.append(cols[0].strip())
        tgt.append(cols[1].strip())
        attr.append(cols[2].strip() if len(cols) > 2 else "")
    parts = grouped_split([duplicate_key(s) for s in src], (test_pairs, dev_pairs), seed=seed)

    def take(idx) -> PairSplit:
        return PairSplit(tuple(src[i] for i in idx), tuple(tgt[i] for i in idx),
                         tuple(attr[i] for i in idx))

    test, dev, train = (take(p) for p in parts)
    return TranslationDataset(
        name="tatoeba-en-fr", source_lang="en", target_lang="fr", train=train, dev=dev,
        test=test,
        data_split=(f"tatoeba-en-fr v1; grouped by nfkc-lower-ws English; test>={test_pairs} "
                    f"dev>={dev_pairs} pairs; seed={seed}; source sha256 "
                    f"{hashlib.sha256(raw).hexdigest()[:16]}"),
        dropped={"malformed": malformed},
    )
