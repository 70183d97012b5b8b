"""Augmentation for distillation (issue 16): Tang et al. (2019)'s rules, checked by their
invariants and by hand."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fitformer.data.augment import AugmentRules, augment_texts
from fitformer.errors import FitformerError

words = st.text(alphabet="abcdefgh", min_size=1, max_size=6)
sentences = st.lists(st.lists(words, min_size=0, max_size=12).map(" ".join),
                     min_size=1, max_size=8)


@settings(max_examples=60, deadline=None)
@given(sentences, st.integers(0, 3), st.integers(0, 10))
def test_copies_are_copy_major_deterministic_and_bounded(texts, copies, seed):
    out = augment_texts(texts, copies, "[MASK]", seed=seed)
    assert len(out) == copies * len(texts)
    assert out == augment_texts(texts, copies, "[MASK]", seed=seed)
    vocab = {w for t in texts for w in t.split()} | {"[MASK]"}
    for j in range(copies):
        for i, t in enumerate(texts):
            got = out[j * len(texts) + i].split()
            assert len(got) <= len(t.split())   # words are replaced or cut, never added
            assert set(got) <= vocab            # replacements come from the training words


@settings(max_examples=40, deadline=None)
@given(sentences, st.integers(1, 4))
def test_ngram_sampling_alone_keeps_a_contiguous_window(texts, max_ngram):
    rules = AugmentRules(p_mask=0.0, p_replace=0.0, p_ngram=1.0, max_ngram=max_ngram)
    for t, a in zip(texts, augment_texts(texts, 1, "[MASK]", rules=rules), strict=True):
        w, g = t.split(), a.split()
        assert len(g) == len(w) or 1 <= len(g) <= max_ngram
        assert any(w[s:s + len(g)] == g for s in range(len(w) - len(g) + 1))


def test_rules_by_hand():
    texts = ("a gripping film", "dull")
    assert augment_texts(texts, 2, "[MASK]", rules=AugmentRules(0.0, 0.0, 0.0)) == texts * 2
    assert augment_texts(texts, 1, "[M]", rules=AugmentRules(1.0, 0.0, 0.0)) == \
        ("[M] [M] [M]", "[M]")
    assert augment_texts(texts, 0, "[MASK]") == ()
    assert augment_texts(("",), 1, "[MASK]") == ("",)
    # With every word replaced, "dull" (1 of 4 training words) turns up about 1/4 of the time.
    many = augment_texts(texts * 200, 1, "[MASK]", rules=AugmentRules(0.0, 1.0, 0.0))
    share = sum(w == "dull" for t in many for w in t.split()) / (4 * 200)
    assert 0.2 < share < 0.3


def test_bad_rules_and_counts_are_refused():
    with pytest.raises(FitformerError, match="must be >= 0"):
        augment_texts(("x",), -1, "[MASK]")
    with pytest.raises(FitformerError, match="no mask token"):
        augment_texts(("x",), 1, "")
    with pytest.raises(FitformerError, match="p_mask \\+ p_replace"):
        AugmentRules(0.6, 0.6)
    with pytest.raises(FitformerError, match="max_ngram"):
        AugmentRules(max_ngram=0)
