from collections import Counter

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from fitformer.data.splits import deduplicate, duplicate_key, grouped_split, stratified_split


def test_duplicate_key_normalises_unicode_case_and_space():
    # NFKC folds the "ﬁ" ligature and full-width letters; whitespace runs collapse.
    assert duplicate_key("  The\u00a0ﬁlm\tIS  ＧＲＥＡＴ ") == "the film is great"


def test_deduplicate_hand_case():
    texts = ["Good film", "good  film", "Bad", "bad", "Meh", "meh ", "Other"]
    labels = ["pos", "pos", "neg", "pos", "neg", "neg", "pos"]
    r = deduplicate(texts, labels)
    # "good film" twice with one label: keep the first; "bad" has two labels: drop both.
    assert r.keep == (0, 4, 6)
    assert r.duplicates_dropped == 2
    assert r.conflicts_dropped == 2


@given(labels=st.lists(st.integers(0, 3), min_size=5, max_size=300),
       frac=st.floats(0.0, 0.45), seed=st.integers(0, 5))
def test_stratified_split_is_exact_disjoint_covering_and_proportional(labels, frac, seed):
    n = len(labels)
    size = int(frac * n)
    parts = stratified_split(labels, (size, size), seed=seed)
    assert [len(p) for p in parts[:2]] == [size, size]
    allidx = np.concatenate(parts)
    assert sorted(allidx.tolist()) == list(range(n))
    y = np.asarray(labels)
    total = Counter(labels)
    for part in parts[:2]:
        got = Counter(y[part].tolist())
        for c, cnt in total.items():
            # Largest remainder: within 1 of the share of what is left; over two parts of
            # at most 45% each that stays within 2 of the share of the whole.
            assert abs(got.get(c, 0) - cnt * size / n) < 2
    again = stratified_split(labels, (size, size), seed=seed)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


@given(groups=st.lists(st.sampled_from("abcdefghij"), min_size=1, max_size=200),
       a=st.integers(0, 40), b=st.integers(0, 40))
def test_grouped_split_never_splits_a_group(groups, a, b):
    parts = grouped_split(groups, (a, b), seed=0)
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(groups)))
    seen = {}
    for k, part in enumerate(parts):
        for i in part:
            assert seen.setdefault(groups[i], k) == k
    # A non-final part is either at least its minimum, or everything after it is empty.
    for k, m in enumerate((a, b)):
        if len(parts[k]) < m:
            assert all(len(p) == 0 for p in parts[k + 1:])
