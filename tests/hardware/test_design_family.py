"""The design family (issue 15): the shared sparse-MAC array (designs b-d) by hand on tiny
matrices, its simulator, resource monotonicity, the roofline, the back-end registry and
the GPU engine calibration."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fitformer.errors import FitformerError
from fitformer.hardware.accelerator import DesignPoint, Inference, Platform
from fitformer.hardware.shared_array import (
    array_unit,
    matrix_cycles,
    tiled_compute_cycles,
)
from fitformer.hardware.simulator import simulate_tiled_pass
from fitformer.hardware.workload import ModelDims, Workload, work_from_mask

PLAT = Platform("DSP48E2", 19.2, True, {"dsp": 2520, "bram_18k": 1824, "uram": 0,
                                        "lut": 274080, "ff": 548160}, 200.0)


def _hp_mask_32x32() -> np.ndarray:
    """Two stripes of 16 columns; stripe 0 keeps block row 0, stripe 1 block row 1; in
    every kept row segment, 2 of the 4 columns of each bank (k = 2)."""
    m = np.zeros((32, 32), dtype=bool)
    bank_cols = np.array([0, 1, 4, 5, 8, 9, 12, 13])
    m[0:16, bank_cols] = True
    m[16:32, 16 + bank_cols] = True
    return m


def _workload(mask: np.ndarray) -> Workload:
    dims = ModelDims(layers=1, hidden=32, heads=2, intermediate=32, vocab=10)
    return Workload(dims, (work_from_mask("q", 0, mask, 16, 4, "encoder", 16),), (16, 16), 4,
                    "hp", 0.75, None, "test")


def _design(P, T, R, on_chip=True):
    return DesignPoint("fx16", on_chip, {"array": {"P": P, "T": T, "R": R},
                                         "nonlinear": {"lanes": 8}, "add_norm": {"lanes": 8}},
                       "shared", "fx16")


def test_tile_recurrence_by_hand():
    # Tile 0: PEs end at 3 and 1, merged at 3 + 2 rows = 5. Tile 1 needs no freed buffer
    # yet (two buffers): PEs end at 3 + 1 = 4 and 1 + 3 = 4, merged at 4 + 2 = 6.
    assert tiled_compute_cycles(np.array([[3.0, 1.0], [1.0, 3.0]]), [2, 2]) == 6
    # Three tiles: tile 2 waits for tile 0's merge (at 5) on PE 1, which ended tile 1 at 2.
    w = np.array([[4.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    # tile0 ends (4, 1) merged 5; tile1 ends (5, 2) merged 6; tile2 starts max(end, 5):
    # (5, 5) -> ends (6, 6), merged 7.
    assert tiled_compute_cycles(w, [1, 1, 1]) == 7


def test_shared_array_cycles_by_hand_and_simulator_agrees():
    mask = _hp_mask_32x32()
    wl = _workload(mask)
    m = wl.matrices[0]
    # P = 2: each PE owns one stripe, one kept block of 16 rows x k = 2 cycles = 32 cycles.
    # Untiled (R = 32 rows): merged = 32 + 32 rows; fill = 8 (MAC) + log2 4 + log2 2 = 11;
    # the first stripe's inputs load in c = 16 cycles; one pass of 4 tokens on T = 4.
    cyc, bound = matrix_cycles(m, {"P": 2, "T": 4, "R": 32}, wl, _design(2, 4, 32), PLAT, 4)
    assert (cyc, bound) == (16 + 32 + 32 + 11, "compute")
    # 8 tokens on T = 4: two passes of the same per-pass cycles.
    assert matrix_cycles(m, {"P": 2, "T": 4, "R": 32}, wl, _design(2, 4, 32), PLAT, 8)[0] \
        == 16 + 2 * (32 + 32 + 11)
    sim = simulate_tiled_pass(mask, 16, 16, 4, 2, 32)
    assert sim.compute_cycles == 64
    assert sim.slots["bank_conflict"] == 0 and sim.slots["imbalance_idle"] == 0
    # Row tiles of 16: PE 0's block is in tile 0, PE 1's in tile 1; two buffers absorb
    # the drift: both end at 32, the last tile merges 16 rows.
    tiled = simulate_tiled_pass(mask, 16, 16, 4, 2, 16)
    assert tiled.compute_cycles == 48 and tiled.slots["tile_sync"] == 0


def test_row_tiles_can_idle_a_balanced_pe():
    # 48 x 32, HP-balanced (K1 = 2 per stripe): stripe 0 keeps block rows 0, 1; stripe 1
    # block rows 1, 2. Per tile of 16 rows: PE 0 works (32, 32, 0), PE 1 (0, 32, 32).
    # tile 0 merged at 32 + 16 = 48; tile 1 ends (64, 32), merged 80; tile 2 must wait for
    # tile 0's buffer (48): PE 1 starts at 48 (waits 16), ends 80, merged 96. PE 0 then
    # idles 16 at the end: 32 cycles of tile_sync, no imbalance (equal work per PE).
    bank_cols = np.array([0, 1, 4, 5, 8, 9, 12, 13])
    mask = np.zeros((48, 32), dtype=bool)
    mask[0:32, bank_cols] = True
    mask[16:48, 16 + bank_cols] = True
    sim = simulate_tiled_pass(mask, 16, 16, 4, 2, 16)
    assert sim.compute_cycles == 96
    assert sim.slots == {"bank_conflict": 0, "imbalance_idle": 0, "raw_hazard": 0,
                         "dram_wait": 0, "tile_sync": 32 * 4}
    wl = _workload(mask)
    m = wl.matrices[0]
    fill = 8 + 2 + 1
    assert matrix_cycles(m, {"P": 2, "T": 4, "R": 16}, wl, _design(2, 4, 16), PLAT, 4)[0] \
        == 16 + 96 + fill


def test_unstructured_mask_shows_bank_conflicts_on_the_array():
    rng = np.random.default_rng(0)
    mask = rng.random((64, 64)) < 0.3
    sim = simulate_tiled_pass(mask, 16, 16, 4, 4, 64, order="column")
    assert sim.slots["bank_conflict"] > 0 and sim.slots["imbalance_idle"] > 0


@pytest.mark.parametrize("knob", ["P", "T"])
def test_array_resources_grow_with_every_knob(knob):
    mask = np.ones((64, 64), dtype=bool)
    dims = ModelDims(layers=1, hidden=64, heads=2, intermediate=64, vocab=10)
    wl = Workload(dims, (work_from_mask("q", 0, mask, 16, 4, "encoder", 16),), (16, 16), 4,
                  "dense", 0.0, None, "test")
    inf = Inference(1, 16)
    prev = None
    for v in (1, 2, 4):
        knobs = {"P": 1, "T": 1, "R": 64, knob: v}
        d = DesignPoint("fx16", True, {"array": knobs, "nonlinear": {"lanes": 8},
                                       "add_norm": {"lanes": 8}}, "shared", "fx16")
        res = array_unit(wl, d, PLAT, inf).resources
        if prev is not None:
            assert res.dsp > prev.dsp and res.lut > prev.lut and res.ff > prev.ff
        prev = res


def test_zcu104_dense_roofline_by_hand(home):
    from fitformer.hardware.catalog import load_catalog
    from fitformer.hardware.frontends import workload_from_pattern
    from fitformer.hardware.roofline import fpga_roofline

    dev = load_catalog(only=["zcu104"], include_host=False)[0]
    wl = workload_from_pattern("default", sparsity=0.0)
    roof = fpga_roofline(wl, dsp=1728, dsp_type="DSP48E2", dram_gbytes_per_s=17.07,
                         clock_mhz=200, precision="fx8", batch=1, seq_len=128)
    # MiniLM: 6 layers x 128 tokens x (4 x 384^2 + 2 x 384 x 1536) + attention
    # 6 x 2 x 128^2 x 384, plus pooler (1 token) and classifier.
    linear = 6 * 128 * (4 * 384 * 384 + 2 * 384 * 1536) + 384 * 384 + 2 * 384
    macs = linear + 6 * 2 * 128 * 128 * 384
    assert roof["macs"] == macs
    assert roof["compute_ms"] == pytest.approx(macs / (1728 * 2 * 200e3))
    assert roof["bound"] == "compute"
    from fitformer.hardware.dse import explore

    est = explore(wl, dev, precision="fx8", use_cache=False)
    assert est.design.family == "shared"
    assert est.compute_ms / roof["roofline_ms"] <= 2.0


def test_unknown_device_kind_names_the_known_ones():
    from fitformer.hardware.catalog import Device
    from fitformer.hardware.estimate import estimate

    dev = Device.model_construct(id="tpu-x", name="x", kind="tpu")
    wl = _workload(_hp_mask_32x32())
    with pytest.raises(FitformerError, match="known kinds: cpu, fpga, gpu, host-cpu"):
        estimate(dev, wl, batch=1, seq_len=16)


def test_gpu_engines_reproduce_their_calibration_within_30_percent():
    from fitformer.hardware.gpu import ENGINES, fit_engine, get_engine

    for name, shipped in ENGINES.items():
        fitted, scale, rows = fit_engine(name)
        assert any(not r["fit"] for r in rows), "every engine holds points out"
        for r in rows:
            assert abs(r["error"]) <= 0.30, r
        # The shipped parameters are the fit's (rounded).
        assert fitted.launch_us == pytest.approx(shipped.launch_us, rel=0.02)
        assert fitted.compute_efficiency == pytest.approx(shipped.compute_efficiency,
                                                          abs=0.01)
    with pytest.raises(FitformerError, match="tensorrt-fp16"):
        get_engine("nope")
    assert math.isfinite(ENGINES["tensorrt-fp16"].launch_us)


def test_fqbert_at_its_own_multiplier_count(home):
    from fitformer.experiments.accelerator import validate_published

    rows = {r["name"]: r for r in validate_published()}
    for name, r in rows.items():
        if r["multipliers"]:
            assert r["ours"]["multipliers"] == r["multipliers"], name
            assert 0.67 <= r["latency_ratio"] <= 1.5, (name, r["latency_ratio"])
            assert r["ours"]["fits"]
    assert not rows["Chen et al. spatial BERT on U280"]["verified"]
