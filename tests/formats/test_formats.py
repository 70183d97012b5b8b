"""Storage formats: exact round trips (property-based), hand-counted sizes and bounds."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fitformer.formats import FORMATS, format_sizes, index_bits, make_format, mask_log2_count
from fitformer.sparsity.patterns import make_pattern

EXACT_MASK = {"coo", "csr", "csc"}
# Formats whose structure a pattern's masks hold: they then decode the mask exactly.
HOLDS = {"hp": {"hp"}, "cbb": {"cbr", "bcsr"}, "block": {"bcsr"}, "bank": {"csb"}}


@given(shape=st.tuples(st.integers(1, 48), st.integers(1, 48)),
       pattern=st.sampled_from(["unstructured", "block", "cbb", "bank", "hp"]),
       sparsity=st.floats(0.0, 1.0), seed=st.integers(0, 5),
       zero_frac=st.sampled_from([0.0, 0.3]))
def test_round_trip_all_formats(shape, pattern, sparsity, seed, zero_frac):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(*shape, generator=g)
    pat = make_pattern(pattern, block=(4, 8), banks=4)
    mask = pat.mask(w, sparsity).numpy()
    # Kept zeros: some kept weights are exactly zero and must survive.
    values = w.numpy() * (torch.rand(*shape, generator=g).numpy() >= zero_frac)
    for name in FORMATS:
        fmt = make_format(name, block=(4, 8), banks=4)
        v, m = fmt.decode(fmt.encode(values, mask))
        np.testing.assert_array_equal(v, np.where(mask, values, 0))
        assert not (mask & ~m).any(), name                       # never loses a position
        if name in EXACT_MASK or name in HOLDS.get(pattern, ()) and shape[0] % 4 == 0 \
                and shape[1] % 8 == 0:
            np.testing.assert_array_equal(m, mask, err_msg=name)


def test_index_bits_rule():
    assert [index_bits(n) for n in (0, 1, 2, 3, 4, 5, 96, 97)] == [0, 0, 1, 2, 2, 3, 7, 7]
    assert index_bits(5, aligned=True) == 8 and index_bits(300, aligned=True) == 16


def test_hand_counted_sizes_and_bound_4x4_hp():
    # r=2, c=4, B=2: K1=1 block per stripe, k=1 per bank (the 4x4 HP case of the pattern
    # tests). 4 kept values; offsets 1 bit each (bank width 2); 1 block-row index of 1 bit
    # (Mb = 2). Bound: 4 w + log2 C(2,1) + 1 * 1 * 2 * 2 * log2 C(2,1) = 4 w + 5.
    W = np.array([[1, 2, 3, 4], [5, 6, 7, 8], [.1, .2, .3, 9], [.1, .1, .1, .1]], np.float32)
    hp = make_pattern("hp", block=(2, 4), banks=2)
    mask = hp.mask(torch.from_numpy(W), 0.75).numpy()
    rows = {r["format"]: r for r in format_sizes(W, mask, value_bits=16, pattern="hp",
                                                 counts={"K1": 1, "k": 1}, block=(2, 4),
                                                 banks=2)}
    assert rows["hp"]["total_bits"] == 4 * 16 + 4 * 1 + 1 == 69
    assert rows["hp"]["bound_bits"] == pytest.approx(69.0)
    assert rows["hp"]["ratio_to_bound"] == pytest.approx(1.0)
    # CSR: 4 values, 4 column indices of 2 bits, 5 row pointers of ceil(log2 5) = 3 bits.
    assert (rows["csr"]["value_bits"], rows["csr"]["index_bits"],
            rows["csr"]["pointer_bits"]) == (64, 8, 15)
    # COO: 4 x (2 + 2) index bits. Dense: 16 values.
    assert rows["coo"]["index_bits"] == 16 and rows["dense"]["total_bits"] == 256
    # BCSR 2x4: one block (8 values), block-column index 0 bits (one block column),
    # 3 block-row pointers of ceil(log2 2) = 1 bit.
    assert (rows["bcsr"]["value_bits"], rows["bcsr"]["index_bits"],
            rows["bcsr"]["pointer_bits"]) == (128, 0, 3)
    # CSB, banks of 2 columns over whole rows: k = 1 (the largest bank count), 4 rows x
    # 2 banks x 1 value, 1-bit offsets; rows 2-3 are explicit zeros.
    assert (rows["csb"]["value_bits"], rows["csb"]["index_bits"]) == (128, 8)


@pytest.mark.parametrize("pattern,counts,expected", [
    ("unstructured", {"kept": 2}, math.log2(math.comb(16, 2))),
    ("block", {"blocks": 1}, math.log2(math.comb(2, 1))),
    ("cbb", {"K1": 1}, 1 * math.log2(math.comb(2, 1))),
    ("bank", {"k": 1}, 4 * 2 * math.log2(math.comb(2, 1))),
    ("nm", {"n": 2}, 4 * 1 * math.log2(math.comb(4, 2))),
    ("hp", {"K1": 1, "k": 1}, 1 + 4 * 1),
])
def test_bound_hand_cases_4x4(pattern, counts, expected):
    # 4x4, r=2, c=4 (Mb = 2, S = 1), B = 2 (bank width 2 in HP, 2 columns in bank-balanced),
    # N:M with m = 4.
    got = mask_log2_count(pattern, (4, 4), counts, r=2, c=4, banks=2, m=4)
    assert got == pytest.approx(expected)


def test_hp_format_in_memory_layout():
    fmt = make_format("hp")
    w = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    mask = make_pattern("hp").mask(w, 0.75).numpy()
    enc = fmt.encode(w.numpy(), mask)
    S, K1, k = 2, 2, 2   # d = 0.25 -> d2 = 0.5, d1 = 0.5 -> K1 = 2 of 4 blocks, k = 2 of 4
    assert enc.arrays["block_rows"].shape == (S, K1)
    assert enc.arrays["values"].shape == (S, K1 * 16, 4, k)
    assert enc.arrays["offsets"].shape == (S, K1 * 16, 4, k)
    assert enc.arrays["offsets"].max() < 4
