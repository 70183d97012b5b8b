"""Text augmentation for knowledge distillation: noisy copies of the training sentences,
labelled by the teacher rather than by the dataset.

A small labelled set (Rotten Tomatoes: 10,751 training sentences) lets a pruned student
match the teacher only where the teacher was trained. Distilling on perturbed copies of
those sentences shows the student the teacher's function around them; TinyBERT (Jiao et al.,
Findings of EMNLP 2020, §3.3) and Tang et al. ("Distilling Task-Specific Knowledge from
BERT into Simple Neural Networks", arXiv:1903.12136, 2019, §3.3) report their largest gains
on small tasks from it.

The rules are Tang et al.'s, per copy and per whitespace-separated word:

- **masking**: with probability ``p_mask`` the word becomes the tokenizer's mask token;
- **word replacement**: else, with probability ``p_replace``, the word becomes a word drawn
  from the training split's unigram distribution (Xie et al., "Data Noising as Smoothing in
  Neural Network Language Models", ICLR 2017). Tang et al. replace a word by one of the same
  part of speech; that needs a tagger, which fitformer does not ship;
- **n-gram sampling**: then, with probability ``p_ngram``, only a random window of ``n``
  words is kept, ``n`` uniform in ``1..max_ngram``.

Defaults are Tang et al.'s (``p_mask = p_replace = 0.1``, ``p_ngram = 0.25``, ``n <= 5``).
The copies are a function of ``(texts, copies, seed)`` alone (numpy's PCG64), so a resumed or
re-run training sees the same sentences.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from fitformer.errors import FitformerError


@dataclass(frozen=True)
class AugmentRules:
    """Probabilities of Tang et al. (2019)'s augmentation rules (see the module docstring).

    Attributes:
        p_mask: probability that a word becomes the mask token.
        p_replace: probability that a word (not masked) becomes a unigram-sampled word.
        p_ngram: probability that a copy is cut to a random window of words.
        max_ngram: the longest window (words, >= 1).
    """

    p_mask: float = 0.1
    p_replace: float = 0.1
    p_ngram: float = 0.25
    max_ngram: int = 5

    def __post_init__(self):
        for name in ("p_mask", "p_replace", "p_ngram"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise FitformerError(f"augmentation {name} {v} must be in [0, 1].")
        if self.p_mask + self.p_replace > 1.0:
            raise FitformerError(f"augmentation p_mask + p_replace = "
                                 f"{self.p_mask + self.p_replace} must be at most 1.")
        if self.max_ngram < 1:
            raise FitformerError(f"augmentation max_ngram {self.max_ngram} must be >= 1.")

    def as_key(self) -> dict:
        return asdict(self)


def augment_texts(texts: Sequence[str], copies: int, mask_token: str, *, seed: int = 0,
                  rules: AugmentRules = AugmentRules()) -> tuple[str, ...]:
    """``copies`` noisy versions of every text, copy-major: ``out[j * len(texts) + i]`` is
    copy ``j`` of ``texts[i]``.

    Args:
        texts: the training sentences (str).
        copies: versions per sentence (>= 0; 0 returns an empty tuple).
        mask_token: the tokenizer's mask token, e.g. ``[MASK]`` for BERT vocabularies.
        seed: seeds the draws.
        rules: the probabilities.

    Returns:
        ``copies * len(texts)`` strings; an empty sentence stays empty.

    Raises:
        FitformerError: ``copies`` < 0, or an empty ``mask_token`` while ``p_mask`` > 0.
    """
    if copies < 0:
        raise FitformerError(f"--distill-augment {copies} must be >= 0 (copies per sentence).")
    if copies == 0 or not texts:
        return ()
    if rules.p_mask > 0 and not mask_token:
        raise FitformerError("the tokenizer has no mask token; augmentation masks words "
                             "(use a BERT-style tokenizer or --distill-augment 0).")
    words = [t.split() for t in texts]
    vocab, counts = np.unique(np.array([w for ws in words for w in ws] or [""], dtype=object),
                              return_counts=True)
    cdf = np.cumsum(counts) / counts.sum()
    rng = np.random.default_rng([seed, copies, len(texts)])
    out: list[str] = []
    for _ in range(copies):
        for ws in words:
            n = len(ws)
            if n == 0:
                out.append("")
                continue
            u = rng.random(n)
            new = list(ws)
            replace = np.flatnonzero((u >= rules.p_mask) & (u < rules.p_mask + rules.p_replace))
            if replace.size:
                drawn = vocab[np.minimum(np.searchsorted(cdf, rng.random(replace.size),
                                                         side="right"), len(vocab) - 1)]
                for i, w in zip(replace, drawn, strict=True):
                    new[i] = w
            for i in np.flatnonzero(u < rules.p_mask):
                new[i] = mask_token
            if rng.random() < rules.p_ngram:
                size = int(rng.integers(1, rules.max_ngram + 1))
                if size < n:
                    start = int(rng.integers(0, n - size + 1))
                    new = new[start:start + size]
            out.append(" ".join(new))
    return tuple(out)
