"""The analytical accelerator model: hand-computed cycles, profile invariants, knob
monotonicity, memory tiling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fitformer.hardware.accelerator import (
    DesignPoint,
    Inference,
    Platform,
    attention_unit,
    estimate_design,
    linear_unit,
    minimal_design,
)
from fitformer.hardware.resources import bram_18k_count, dsp_per_multiplier, memory, uram_count
from fitformer.hardware.workload import (
    ModelDims,
    Workload,
    balanced_work,
    stripe_profile,
    work_from_mask,
)
from fitformer.sparsity.patterns import Hierarchical

PLAT = Platform("DSP48E2", 10.0, False, {"dsp": 1e6, "bram_18k": 1e6, "uram": 0, "lut": 1e9,
                                         "ff": 1e9}, 100.0)
DIMS = ModelDims(layers=1, hidden=32, heads=2, intermediate=64, vocab=100, num_labels=2)


def _workload(matrices) -> Workload:
    return Workload(DIMS, tuple(matrices), (16, 16), 4, "hp", 0.0, None, "test")


def test_stripe_profile_hand_case():
    # One stripe of 8 columns, B = 2 banks of 4. Row 0: 3 kept in bank 0, 1 in bank 1 ->
    # 3 cycles; row 1 empty -> skipped; row 2: 2 and 2 -> 2 cycles.
    mask = np.zeros((3, 8), dtype=bool)
    mask[0, [0, 1, 2, 5]] = True
    mask[2, [0, 3, 4, 7]] = True
    cycles, segs = stripe_profile(mask, c=8, banks=2)
    assert cycles.tolist() == [5] and segs.tolist() == [2]


def test_linear_unit_hand_computed_cycles():
    # 32x32 HP matrix, r = c = 16, B = 4, K1 = 1 block per stripe, k = 2 per bank:
    # stripe_cycles = 16 rows x 2 = 32 for both stripes. P = 2, T = 1, 3 tokens:
    # load = ceil(32 / 4) = 8; compute = 32 + fill (8 + log2 4 = 10) = 42;
    # reduce = ceil(32 / 4) + log2 2 = 9; cycles = 8 + 42 + 9 + (3 - 1) * 42 = 143.
    m = balanced_work("q", 0, (32, 32), 16, 16, 4, K1=1, k=2)
    assert m.stripe_cycles.tolist() == [32, 32] and m.nnz == 16 * 2 * 4 * 2
    design = minimal_design("fx16").with_knobs("qkv", {"P": 2, "T": 1})
    res = linear_unit("qkv", [m], {"P": 2, "T": 1}, _workload([m]), design, PLAT,
                      Inference(1, 3))
    assert res.rows == [("q", 0, 143, "compute", "encoder")]
    assert res.resources.dsp == 2 * 4 * 1          # P x B x T multipliers at fx16


def test_linear_unit_streamed_weights_are_bandwidth_bound():
    m = balanced_work("q", 0, (32, 32), 16, 16, 4, K1=2, k=4)   # dense: 32 x 32 x 16 bits
    slow = Platform("DSP48E2", 0.01, False, PLAT.available, 100.0)  # 0.8 bits per cycle
    design = DesignPoint("fx16", False, minimal_design("fx16").knobs)
    res = linear_unit("qkv", [m], {"P": 1, "T": 1}, _workload([m]), design, slow,
                      Inference(1, 1))
    (_, _, cycles, bound, _), = res.rows
    assert bound == "bandwidth"
    assert cycles >= math.ceil(32 * 32 * 16 / 0.8)


def test_attention_hand_computed_cycles():
    # seq 4, T = 2: sweep = 4 * ceil(4 / 2) = 8; per head = 4 * 8 + 2 * fill + 3 * 12 with
    # fill = 8 + log2(16) = 12 -> 32 + 24 + 36 = 92; 2 heads, H_par = 1 -> 184 per sequence.
    wl = _workload([])
    res = attention_unit({"H_par": 1, "T": 2}, wl, minimal_design("fx16"), PLAT,
                         Inference(1, 4))
    assert res.rows[0][2] == 184
    # T x head_dim multipliers (fx16: one DSP each) + T softmax lanes (exp, add, mul).
    assert res.resources.dsp == 2 * 16 * 1 + 2 * (7 + 2 + 3)
    fx8 = attention_unit({"H_par": 1, "T": 2}, wl, minimal_design("fx8"), PLAT,
                         Inference(1, 4))
    assert fx8.resources.dsp == 2 * 16 * 0.5 + 2 * (7 + 2 + 3)      # WP486 packing


@given(st.integers(1, 4), st.integers(1, 4), st.sampled_from([1, 2, 4]),
       st.integers(0, 3))
def test_hp_masks_profile_equals_counts(stripes, blocks, banks, seed):
    c, r = 16, 16
    M, N = blocks * r, stripes * c
    w = torch.randn(M, N, generator=torch.Generator().manual_seed(seed))
    pat = Hierarchical(r, c, banks=banks)
    levels = pat.plan((M, N), 0.7)
    cnt = pat.counts((M, N), levels)
    mask = pat.mask_from_levels(w, levels).numpy()
    measured = work_from_mask("q", 0, mask, c, banks)
    counted = balanced_work("q", 0, (M, N), r, c, banks, cnt["K1"], cnt["k"])
    assert measured.stripe_cycles.tolist() == counted.stripe_cycles.tolist()
    assert measured.nnz == counted.nnz


@given(st.integers(1, 40), st.integers(1, 40), st.sampled_from([1, 2, 4]), st.floats(0, 1),
       st.integers(0, 99))
def test_profile_bounds_for_any_mask(M, N, banks, density, seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((M, N)) < density
    cycles, segs = stripe_profile(mask, 16, banks)
    S = math.ceil(N / 16)
    padded = np.zeros((M, S * 16), dtype=bool)
    padded[:, :N] = mask
    nnz = padded.reshape(M, S, 16).sum(axis=(0, 2))
    assert (cycles * banks >= nnz).all()                  # padding never loses a weight
    assert (cycles <= segs * (16 // banks)).all()         # a row segment is at most c/B
    assert (segs == (padded.reshape(M, S, 16).any(axis=2)).sum(axis=0)).all()


def _hp_workload(K1=1, k=2):
    ms = [balanced_work(role, 0, DIMS.shape(role), 16, 16, 4, K1=K1, k=k)
          for role in ("q", "k", "v", "attn_out", "ffn_in", "ffn_out")]
    ms += [balanced_work(role, None, DIMS.shape(role), 16, 16, 4,
                         K1=math.ceil(DIMS.shape(role)[0] / 16), k=4)
           for role in ("pooler", "classifier")]
    return _workload(ms)


@pytest.mark.parametrize("unit,knob,values", [
    ("ffn_in", "P", [1, 2]), ("ffn_out", "P", [1, 2, 4]), ("qkv", "T", [1, 2, 4, 8]),
    ("attention", "H_par", [1, 2]), ("attention", "T", [1, 2, 4]),
    ("add_norm", "lanes", [1, 2, 4, 8])])
def test_resources_monotone_and_latency_not_worse_in_each_knob(unit, knob, values):
    wl = _hp_workload()
    prev = None
    for v in values:
        base = minimal_design("fx16")
        est = estimate_design(wl, base.with_knobs(unit, {**base.knobs[unit], knob: v}),
                              PLAT, 1, 16)
        r = est.resources
        if prev is not None:
            assert r.dsp > prev.resources.dsp or unit == "add_norm" and r.dsp >= prev.resources.dsp
            assert r.lut >= prev.resources.lut and r.ff >= prev.resources.ff
            if knob != "P":  # a deeper merge tree can cost a cycle per pass
                assert est.total_cycles <= prev.total_cycles
        prev = est


def test_pe_parallelism_balances_hp_but_not_an_unbalanced_mask():
    # HP: compute stage halves exactly with P; an unbalanced mask keeps its slowest stripe.
    hp = balanced_work("ffn_out", 0, (32, 64), 16, 16, 4, K1=1, k=2)
    mask = np.zeros((32, 64), dtype=bool)
    mask[:, :16] = True      # all the work in stripe 0
    skew = work_from_mask("ffn_out", 0, mask, 16, 4)
    for m, expect_halving in ((hp, True), (skew, False)):
        from fitformer.hardware.accelerator import _pe_cycles
        c1, c2 = _pe_cycles(m, 1), _pe_cycles(m, 2)
        assert (c2 * 2 == c1) is expect_halving


def test_memory_tiling_against_ug573_shapes():
    assert bram_18k_count(16, 1024) == 1          # 1K x 18
    assert bram_18k_count(36, 512) == 1           # 512 x 36
    assert bram_18k_count(18, 2048) == 2
    assert bram_18k_count(1, 16384) == 1          # 16K x 1
    assert bram_18k_count(10, 4096, packable=True) == 3   # 3 entries per 36-bit word
    assert uram_count(72, 4096) == 1 and uram_count(18, 16384, packable=True) == 1
    assert memory(16, 64).lut == 16 and memory(16, 64).bram_18k == 0   # LUTRAM
    assert memory(16, 4096, kind="uram").uram == 1


def test_dsp_packing_rule_wp486():
    assert dsp_per_multiplier("fx16", "DSP48E2", 8) == 1.0
    assert dsp_per_multiplier("fx8", "DSP48E2", 2) == 0.5
    assert dsp_per_multiplier("fx8", "DSP48E2", 1) == 1.0     # no shared operand
    assert dsp_per_multiplier("fx8", "DSP48E1", 4) == 1.0     # 7-series


def test_every_constant_is_documented():
    from pathlib import Path

    from fitformer.hardware.resources import CONSTANTS

    doc = (Path(__file__).parents[2] / "docs" / "accelerator-model.md").read_text()
    for name, c in CONSTANTS.items():
        assert f"| `{name}` | {c.value:g} | {c.unit} | {c.source} |" in doc, name
