"""Invariants of every sparsity pattern (design.md §3), property-based, plus hand cases."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from fitformer.errors import FitformerError
from fitformer.sparsity.patterns import (
    BankBalanced,
    Block,
    ColumnBalancedBlock,
    Hierarchical,
    Unstructured,
    make_pattern,
)


def weights(M, N, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(M, N, generator=g)


def pad(W, r, c):
    return F.pad(W, (0, (-W.shape[1]) % c, 0, (-W.shape[0]) % r))


def hp_counts(mask, r, c, B):
    """Blocks kept per stripe and kept weights per bank of each kept row segment."""
    Mp, Np = mask.shape
    blocks = mask.view(Mp // r, r, Np // c, c)
    block_kept = blocks.any(dim=3).any(dim=1)                       # (Mp/r, Np/c)
    per_stripe = block_kept.sum(dim=0)
    banks = mask.view(Mp, Np // c, B, c // B).sum(dim=3)             # (Mp, stripes, B)
    seg_kept = block_kept.repeat_interleave(r, 0)                    # (Mp, stripes)
    return per_stripe, banks, seg_kept


hp_params = st.tuples(
    st.sampled_from([(2, 4), (4, 4), (4, 8), (8, 8), (16, 16), (8, 16)]),
    st.sampled_from([1, 2, 4]),
).filter(lambda t: t[0][1] % t[1] == 0)


@given(shape=st.tuples(st.integers(1, 70), st.integers(1, 70)), params=hp_params,
       sparsity=st.floats(0.0, 1.0), seed=st.integers(0, 3))
def test_hp_invariants_on_the_padded_matrix(shape, params, sparsity, seed):
    (r, c), B = params
    W = weights(*shape, seed)
    hp = Hierarchical(r, c, banks=B)
    d1, d2 = hp.plan(shape, sparsity)
    padded_mask = hp.mask(pad(W, r, c), sparsity)
    cnt = hp.counts(tuple(padded_mask.shape), (d1, d2))   # the invariants of a divisible shape
    per_stripe, banks, seg_kept = hp_counts(padded_mask, r, c, B)
    if cnt["k"] > 0:
        assert (per_stripe == cnt["K1"]).all()
        assert (banks[seg_kept] == cnt["k"]).all()
    assert (banks[~seg_kept] == 0).all()
    # Achieved density never above the request, within one level-1 grid step of it.
    Mp = padded_mask.shape[0]
    achieved = padded_mask.float().mean().item()
    assert achieved <= (1 - sparsity) + 1e-6
    assert achieved >= (1 - sparsity) - d2 * r / Mp - 1e-6


@given(shape=st.tuples(st.integers(1, 64), st.integers(1, 64)), params=hp_params,
       s=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=4), seed=st.integers(0, 3))
def test_hp_masks_only_shrink_and_keep_invariants(shape, params, s, seed):
    (r, c), B = params
    W = pad(weights(*shape, seed), r, c)
    hp = Hierarchical(r, c, banks=B, level2_density=1.0)
    previous = None
    for sparsity in sorted(s):
        W = W * (previous if previous is not None else 1)  # pruned weights are zero
        mask = hp.mask(W, sparsity, previous)
        if previous is not None:
            assert not (mask & ~previous).any()
        cnt = hp.counts(tuple(W.shape), hp.plan(tuple(W.shape), sparsity))
        per_stripe, banks, seg_kept = hp_counts(mask, r, c, B)
        if cnt["k"]:
            assert (per_stripe == cnt["K1"]).all()
        previous = mask


def test_hp_hand_computed_4x4():
    # r=2, c=4, B=2 (banks of 2 columns). Sparsity 0.75: d=0.25, default d2 = 0.5 (smallest
    # grid value >= max(0.5, d)), d1 = 0.5, K1 = floor(0.5 * 2) = 1 block per stripe, k = 1.
    W = torch.tensor([[1.0, 2.0, 3.0, 4.0],
                      [5.0, 6.0, 7.0, 8.0],
                      [0.1, 0.2, 0.3, 9.0],
                      [0.1, 0.1, 0.1, 0.1]])
    hp = Hierarchical(2, 4, banks=2)
    assert hp.plan((4, 4), 0.75) == (0.5, 0.5)
    # Block norms^2: top = 1+4+9+16+25+36+49+64 = 204, bottom = 0.14 + 81 + 0.04 = 81.18:
    # keep the top block. Banks (cols 0-1, 2-3) keep their largest weight per row.
    expected = torch.tensor([[0, 1, 0, 1],
                             [0, 1, 0, 1],
                             [0, 0, 0, 0],
                             [0, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(hp.mask(W, 0.75), expected)


def test_hp_default_split_and_flags():
    hp = Hierarchical()  # 16x16, B=4: grid 0.25, 0.5, 0.75, 1
    assert hp.level2_grid == (0.25, 0.5, 0.75, 1.0)
    assert hp.split(0.8) == pytest.approx((0.4, 0.5))
    assert hp.split(0.3) == pytest.approx((0.7 / 0.75, 0.75))
    assert hp.split(0.0) == (1.0, 1.0)
    assert Hierarchical(level2_density=0.25).split(0.9) == pytest.approx((0.4, 0.25))
    with pytest.raises(FitformerError, match="not on the grid"):
        Hierarchical(level2_density=0.6)
    with pytest.raises(FitformerError, match="cannot reach density"):
        Hierarchical(level2_density=0.25).split(0.5)
    with pytest.raises(FitformerError, match="must divide"):
        Hierarchical(16, 16, banks=3)
    with pytest.raises(FitformerError, match="outside"):
        hp.split(1.5)


def test_minilm_shapes_hp_counts():
    hp = Hierarchical()
    W = weights(1536, 384, 0)
    m = hp.mask(W, 0.9)
    cnt = hp.counts((1536, 384), hp.plan((1536, 384), 0.9))
    assert cnt == {"K1": 19, "k": 2}   # floor(0.2 * 96) = 19 blocks, 2 of 4 per bank
    assert 1 - m.float().mean().item() == pytest.approx(1 - 19 / 96 * 0.5)


@given(shape=st.tuples(st.integers(1, 50), st.integers(1, 50)), sparsity=st.floats(0, 1),
       seed=st.integers(0, 3))
def test_unstructured_exact_count_and_magnitude(shape, sparsity, seed):
    W = weights(*shape, seed)
    m = Unstructured().mask(W, sparsity)
    kept = m.sum().item()
    assert kept == math.floor((1 - sparsity) * W.numel() + 1e-9)
    if 0 < kept < W.numel():
        assert W.abs()[m].min() >= W.abs()[~m].max()


@given(shape=st.tuples(st.integers(1, 50), st.integers(1, 50)),
       rc=st.sampled_from([(1, 1), (2, 2), (4, 2), (3, 5)]), sparsity=st.floats(0, 1),
       seed=st.integers(0, 3))
def test_block_and_cbb_invariants(shape, rc, sparsity, seed):
    r, c = rc
    W = pad(weights(*shape, seed), r, c)
    Mp, Np = W.shape
    for pat in (Block(r, c), ColumnBalancedBlock(r, c)):
        m = pat.mask(W, sparsity)
        blocks = m.view(Mp // r, r, Np // c, c)
        full = blocks.all(dim=3).all(dim=1)
        assert torch.equal(full, blocks.any(dim=3).any(dim=1))   # whole blocks only
        cnt = pat.counts((Mp, Np), pat.plan((Mp, Np), sparsity))
        if isinstance(pat, Block):
            assert full.sum().item() == cnt["blocks"]
        else:
            assert (full.sum(dim=0) == cnt["K1"]).all()


@given(shape=st.tuples(st.integers(1, 40), st.integers(1, 64)), B=st.sampled_from([1, 2, 4]),
       sparsity=st.floats(0, 1), seed=st.integers(0, 3))
def test_bank_balanced_every_bank_same_count(shape, B, sparsity, seed):
    W = weights(*shape, seed)
    M, N = shape
    width = math.ceil(N / B)
    Wp = F.pad(W, (0, width * B - N))
    pat = BankBalanced(B)
    m = pat.mask(Wp, sparsity)
    per_bank = m.view(M, B, width).sum(dim=2)
    assert (per_bank == pat.counts(tuple(Wp.shape), pat.plan(tuple(Wp.shape), sparsity))["k"]
            ).all()
    # Unpadded: full banks keep k, a partial last bank floor(d * its real width).
    real = pat.mask(W, sparsity)
    k = pat.counts(shape, pat.plan(shape, sparsity))["k"]
    for b in range(B):
        w = min(width, max(0, N - b * width))
        got = real[:, b * width:b * width + w].sum(dim=1)
        assert (got == (k if w == width else math.floor((1 - sparsity) * w + 1e-9))).all()


def test_nm_two_four():
    W = weights(8, 16, 0)
    m = make_pattern("nm").mask(W, 0.5)
    assert (m.view(8, 4, 4).sum(dim=2) == 2).all()
    with pytest.raises(FitformerError, match="larger m"):
        make_pattern("nm").mask(W, 0.9)


def test_has_blocks_names_the_patterns_that_take_block():
    from fitformer.sparsity.patterns import pattern_names

    blocked = {n for n in pattern_names() if make_pattern(n).has_blocks}
    assert blocked == {"block", "cbb", "hp"}


def test_unknown_pattern():
    with pytest.raises(FitformerError, match="choose from"):
        make_pattern("random")


# --- Issue 17, item 3: never more real weights than the request, whatever the shape. ---

def _floor_budget(sparsity, M, N):
    """floor((1 - s) * M * N), with the patterns' tolerance for decimal inputs."""
    return math.floor((1 - sparsity) * M * N + 1e-9)


# Requests as users type them: decimals (up to 4 digits), so every count boundary is either
# hit exactly or missed by far more than the 1e-9 the patterns allow for float rounding.
decimal_sparsities = st.one_of(st.integers(0, 10_000).map(lambda i: i / 10_000),
                               st.sampled_from([0.5, 0.7, 0.8, 0.9, 0.95, 0.99]))


PATTERN_CASES = [
    ("unstructured", {}),
    ("block", {"block": (4, 4)}),
    ("block", {"block": (16, 16)}),
    ("cbb", {"block": (4, 8)}),
    ("cbb", {"block": (16, 16)}),
    ("bank", {"banks": 4}),
    ("bank", {"banks": 3}),
    ("nm", {"nm_m": 4}),
    ("nm", {"nm_m": 8}),
    ("hp", {}),
    ("hp", {"block": (4, 8), "banks": 2}),
    ("hp", {"block": (16, 16), "banks": 4, "level2_density": 1.0}),
]

shapes = st.one_of(
    st.tuples(st.just(1), st.integers(1, 80)),          # 1 x N
    st.tuples(st.integers(1, 80), st.just(1)),          # N x 1
    st.tuples(st.integers(1, 15), st.integers(1, 15)),  # smaller than one 16x16 block
    st.tuples(st.integers(1, 80), st.integers(1, 80)),
)


def _mask_or_refused(pat, W, sparsity):
    """The mask, or None when the pattern refuses the request (N:M, HP split)."""
    try:
        return pat.mask(W, sparsity)
    except FitformerError:
        return None


@given(case=st.sampled_from(PATTERN_CASES), shape=shapes, sparsity=decimal_sparsities,
       seed=st.integers(0, 3))
def test_every_pattern_keeps_at_most_the_requested_density(case, shape, sparsity, seed):
    name, kw = case
    pat = make_pattern(name, **kw)
    W = weights(*shape, seed)
    m = _mask_or_refused(pat, W, sparsity)
    if m is None:
        return
    assert m.shape == W.shape and m.dtype == torch.bool
    assert m.sum().item() <= _floor_budget(sparsity, *shape)
    plan = pat.describe(W, m, pat.plan(shape, sparsity))
    assert plan.achieved_sparsity >= sparsity - 1e-9


def _grid_step(pat, shape, levels):
    """Density of one grid step of ``pat`` for a shape its units divide (design.md §3)."""
    M, N = shape
    if pat.name == "unstructured":
        return 1 / (M * N)
    if pat.name == "block":
        return pat.r * pat.c / (M * N)
    if pat.name == "cbb":
        return pat.r / M
    if pat.name == "bank":
        return pat.banks / N
    if pat.name == "nm":
        return 1 / pat.m
    return levels[1] * pat.r / M                  # hp: one block per stripe at d2


def _divides(pat, shape):
    M, N = shape
    if pat.name in ("block", "cbb", "hp"):
        return M % pat.r == 0 and N % pat.c == 0
    if pat.name == "bank":
        return N % pat.banks == 0
    if pat.name == "nm":
        return N % pat.m == 0
    return True


@given(case=st.sampled_from(PATTERN_CASES),
       units=st.tuples(st.integers(1, 5), st.integers(1, 5)), sparsity=decimal_sparsities,
       seed=st.integers(0, 3))
def test_within_one_grid_step_where_the_shape_allows(case, units, sparsity, seed):
    name, kw = case
    pat = make_pattern(name, **kw)
    # A shape the pattern's units divide (blocks r x c; banks B; groups m).
    ur = getattr(pat, "r", 1)
    uc = math.lcm(getattr(pat, "c", 1), getattr(pat, "banks", 1), getattr(pat, "m", 1))
    shape = (units[0] * ur, units[1] * uc)
    assert _divides(pat, shape)
    W = weights(*shape, seed)
    m = _mask_or_refused(pat, W, sparsity)
    if m is None:
        return
    d = 1 - sparsity
    achieved = m.sum().item() / m.numel()
    assert achieved <= d + 1e-9
    assert achieved > d - _grid_step(pat, shape, pat.plan(shape, sparsity)) - 1e-9


def test_issue_17_hp_312x312_at_08_keeps_at_most_19468():
    # Issue 17: hidden 312 with 16x16 blocks kept 19,968 weights (achieved 0.795) where at
    # most floor(0.2 * 312 * 312) = 19,468 are allowed.
    hp = make_pattern("hp")
    W = torch.randn(312, 312, generator=torch.Generator().manual_seed(0))
    m = hp.mask(W, 0.8)
    assert m.sum().item() <= 19_468
    achieved = 1 - m.sum().item() / m.numel()
    assert achieved >= 0.8
    levels = hp.plan((312, 312), 0.8)
    assert levels == pytest.approx((0.4, 0.5))
    # K1 = floor(0.4 * 312 / 16) = floor(7.8) = 7 (was floor(0.4 * 20) = 8 on the padded
    # matrix), k = 2 of 4: d1 = 7 * 16 / 312 = 0.359 of the real rows, not 0.4.
    cnt = hp.counts((312, 312), levels)
    assert cnt == {"K1": 7, "k": 2}
    assert cnt["K1"] * hp.r / 312 == pytest.approx(0.359, abs=1e-3)
    # Within one level-1 grid step (d2 * r / M) of the request.
    assert achieved <= 0.8 + 0.5 * 16 / 312
    # Every stripe keeps 7 blocks; the full banks of kept row segments keep k = 2.
    mp = F.pad(m, (0, 8, 0, 8))
    per_stripe, banks, seg_kept = hp_counts(mp, 16, 16, 4)
    assert (per_stripe == 7).all()
    assert (banks[:, :19][seg_kept[:, :19]] == 2).all()
    # The last stripe has 8 real columns: two full banks keep 2, the padded banks none.
    assert (banks[:, 19, :2][seg_kept[:, 19]] == 2).all()
    assert (banks[:, 19, 2:] == 0).all()


def test_partial_banks_and_groups_keep_floor_of_their_real_width():
    # N:M 2:4 on 7 columns: one full group keeps 2, the 3-column tail floor(0.5 * 3) = 1.
    m = make_pattern("nm").mask(weights(3, 7, 0), 0.5)
    assert (m[:, :4].sum(dim=1) == 2).all() and (m[:, 4:].sum(dim=1) == 1).all()
    # HP on a 1 x 17 row at d = 1 keeps everything; at 0.5 (d1 = 1, d2 = 0.5) the one real
    # column of the last stripe's first bank keeps floor(0.5 * 1) = 0.
    hp = make_pattern("hp")
    assert hp.mask(weights(1, 17, 0), 0.0).all()
    m = hp.mask(weights(1, 17, 0), 0.5)
    assert m.sum().item() == 8 and not m[0, 16]


def test_nm_refuses_a_group_wider_than_the_rows():
    from fitformer.errors import FitformerError
    from fitformer.sparsity.patterns import check_not_emptied, make_pattern

    pat = make_pattern("nm", nm_m=385)
    with pytest.raises(FitformerError, match=r"q 384x384: N:M with m=385 groups more "
                                             r"weights than a row holds \(384\); choose "
                                             r"--nm-m 384 or less"):
        check_not_emptied(pat, "q", (384, 384), pat.plan((384, 384), 0.5), 0.5)
    check_not_emptied(pat, "ffn_out", (384, 1536), pat.plan((384, 1536), 0.5), 0.5)  # fits
