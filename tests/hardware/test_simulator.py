"""The cycle-level simulator: hand-traced cases, HP's zero-stall property, real layers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from fitformer.cli import app
from fitformer.hardware.accelerator import DesignPoint, Platform, _pe_cycles, minimal_design
from fitformer.hardware.simulator import issue_schedule, simulate_layer, simulate_pass
from fitformer.hardware.workload import work_from_mask
from fitformer.sparsity.patterns import Hierarchical

runner = CliRunner()


def test_issue_schedule_hand_traced():
    # Banks 0 and 1 hold two weights each, B = 4.
    # interleaved b0 b1 b0 b1: cycle 1 issues b0 b1, stops at the second b0 (2 conflict
    # slots); cycle 2 issues b0 b1 and the segment ends (2 idle slots).
    assert issue_schedule((2, 2, 0, 0), "interleaved") == (2, 4, 2, 2)
    # column b0 b0 b1 b1: cycle 1 b0 (3 conflict), cycle 2 b0 b1 (2 conflict), cycle 3 b1
    # (3 idle).
    assert issue_schedule((2, 2, 0, 0), "column") == (3, 4, 5, 3)
    # Balanced (HP): k per bank, one read per bank per cycle, nothing lost.
    assert issue_schedule((3, 3, 3, 3), "interleaved") == (3, 12, 0, 0)
    assert issue_schedule((0, 0, 0, 0)) == (0, 0, 0, 0)


def test_two_pe_two_bank_example():
    # c = 4 (2 banks of 2 columns), 2 stripes, P = 2 PEs.
    mask = np.zeros((2, 8), dtype=bool)
    mask[0, [0, 1]] = True      # stripe 0, row 0: both in bank 0 -> 2 cycles, 1 conflict slot
    mask[1, [0, 2]] = True      # stripe 0, row 1: one per bank -> 1 cycle
    mask[0, 6] = True           # stripe 1, row 0: bank 1 only -> 1 cycle, 1 idle slot
    res = simulate_pass(mask, c=4, banks=2, P=2)
    assert res.pe_cycles.tolist() == [3, 1]
    assert res.compute_cycles == 3 and res.useful == 5
    # idle: 1 (PE0 row 0, second cycle) + 1 (PE1 row 0) + PE1 waits 2 cycles x 2 multipliers
    assert res.slots == {"bank_conflict": 1, "imbalance_idle": 6, "raw_hazard": 0,
                         "dram_wait": 0, "tile_sync": 0}
    assert res.useful + sum(res.slots.values()) == 3 * 2 * 2


def test_accumulator_raw_hazard_hand_traced():
    # One row, two stripes on one PE, one weight each: the second write of row 0 comes one
    # cycle after the first; the adder needs 4 -> 3 stall cycles.
    mask = np.zeros((1, 8), dtype=bool)
    mask[0, [0, 4]] = True
    res = simulate_pass(mask, c=4, banks=2, P=1)
    assert res.compute_cycles == 2 + 3
    assert res.slots["raw_hazard"] == 3 * 2


@given(st.integers(1, 3), st.integers(1, 4), st.sampled_from([2, 4]),
       st.sampled_from([0.5, 0.7, 0.8, 0.9, 0.95]), st.integers(0, 5))
def test_hp_masks_have_no_conflict_and_no_imbalance(blocks, stripes, banks, sparsity, seed):
    M, N = 16 * blocks, 16 * stripes
    w = torch.randn(M, N, generator=torch.Generator().manual_seed(seed))
    pat = Hierarchical(16, 16, banks=banks)
    levels = pat.plan((M, N), sparsity)
    mask = pat.mask_from_levels(w, levels).numpy()
    work = work_from_mask("q", 0, mask, 16, banks)
    for P in (p for p in range(1, stripes + 1) if stripes % p == 0):
        res = simulate_pass(mask, 16, banks, P)
        assert res.slots["bank_conflict"] == 0 and res.slots["imbalance_idle"] == 0
        # RAW hazards only if a PE revisits a row within the adder latency.
        assert res.compute_cycles - res.slots["raw_hazard"] // banks == _pe_cycles(work, P)


def test_streamed_weights_wait_for_dram_bursts():
    mask = np.ones((32, 32), dtype=bool)
    work = work_from_mask("q", 0, mask, 16, 4)
    slow = Platform("DSP48E2", 0.05, False, {}, 100.0)         # 4 bits per cycle
    design = DesignPoint("fx16", False, minimal_design("fx16").knobs)
    sim = simulate_layer("q", mask, work, {"P": 1, "T": 1}, design, slow, (16, 16), 4, 1, 1)
    assert sim.stall_cycles["dram_wait"] > 0
    assert sim.dram_cycles_per_pass >= 32 * 32 * 16 / 4


def test_simulate_real_hp_run_agrees_with_model(tiny_hp_run):
    _, hp = tiny_hp_run
    res = runner.invoke(app, ["simulate", "--device", "zcu104", "--pruned", str(hp.path),
                              "--seq-len", "64", "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert len(rep["layers"]) == 36
    for row in rep["layers"]:
        assert abs(row["ratio_simulated_to_analytical"] - 1) < 0.05, row["layer"]
        assert row["stalls"]["bank_conflict"] == 0 and row["stalls"]["imbalance_idle"] == 0
        if rep["family"] == "per_op":
            assert row["multiplier_utilization"] == pytest.approx(1.0)
        else:   # the shared array's row tiles: merges and tile waits, never HP imbalance
            assert 0.5 < row["multiplier_utilization"] <= 1.0
    # The per-op design (a) on the same masks: every multiplier busy every cycle.
    res = runner.invoke(app, ["simulate", "--device", "zcu104", "--pruned", str(hp.path),
                              "--seq-len", "64", "--family", "per_op", "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["family"] == "per_op"
    for row in rep["layers"]:
        assert abs(row["ratio_simulated_to_analytical"] - 1) < 0.05, row["layer"]
        assert row["multiplier_utilization"] == pytest.approx(1.0)


def test_simulate_unstructured_reports_stalls(home):
    res = runner.invoke(app, ["simulate", "--device", "zcu104", "--sparsity", "0.8",
                              "--pattern", "unstructured", "--layer",
                              "layer.2.output.dense", "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["layer"] == "bert.encoder.layer.2.output.dense"
    assert rep["stalls"]["bank_conflict"] > 0 and rep["stalls"]["imbalance_idle"] > 0
    assert rep["multiplier_utilization"] < 0.8
    assert set(rep["stalls"]) == {"bank_conflict", "imbalance_idle", "raw_hazard", "dram_wait",
                                  "tile_sync"}
    assert "ratio_simulated_to_analytical" in rep


@pytest.mark.parametrize("args,needle", [
    (["--device", "zcu104", "--sparsity", "0.8", "--layer", "nope"], "not a pruned layer"),
    (["--device", "zcu104", "--sparsity", "0.8", "--layer", "dense"], "ambiguous"),
    (["--device", "rtx-4090", "--sparsity", "0.8"], "FPGA"),
    (["--device", "zcu104", "--sparsity", "0"], "masks"),
])
def test_simulate_bad_input(home, args, needle):
    res = runner.invoke(app, ["simulate", *args])
    assert res.exit_code != 0
    assert needle in str(res.exception) + res.output
