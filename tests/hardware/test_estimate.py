"""Estimates on real pruned runs, the DSE and the `fitformer estimate` command."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from fitformer.cli import app
from fitformer.errors import FitformerError
from fitformer.hardware.accelerator import estimate_design, minimal_design
from fitformer.hardware.catalog import load_catalog
from fitformer.hardware.dse import explore, platform_of
from fitformer.hardware.estimate import estimate
from fitformer.hardware.frontends import workload_from_pattern, workload_from_run

runner = CliRunner()
CONTRACT = {"device", "method", "latency_ms", "compute_ms", "call_overhead_ms", "precision",
            "hp_split", "resources", "utilization", "fits", "weights_on_chip", "units"}
UNIT_KEYS = {"unit", "layer", "parallelism", "dsp", "bram_18k", "uram", "lut", "ff",
             "cycles", "latency_ms", "bound"}


def _device(did):
    return load_catalog(only=[did], include_host=False)[0]


def _comparable(rep):
    return {k: v for k, v in rep.items() if k not in ("workload",)}


def test_hp_run_and_sparsity_give_equal_estimates(tiny_hp_run):
    _, hp = tiny_hp_run
    from_run = workload_from_run(hp.path)
    from_counts = workload_from_pattern("default", pattern="hp", sparsity=0.8)
    assert from_run.hp_split == pytest.approx(from_counts.hp_split)
    for did in ("zcu104", "u50"):
        # Design (a) depends on whole stripes only: HP's counts give the masks' cycles.
        a = explore(from_run, _device(did), use_cache=False, families=("per_op",))
        b = explore(from_counts, _device(did), use_cache=False, families=("per_op",))
        assert a.total_cycles == b.total_cycles > 0 and a.design == b.design
        # The row-tiled shared array also sees how kept blocks spread over row tiles,
        # which counts alone cannot know: they are a lower bound, and close.
        ra = estimate(_device(did), from_run, use_cache=False)
        rb = estimate(_device(did), from_counts, use_cache=False)
        assert rb["compute_ms"] <= ra["compute_ms"] <= 1.15 * rb["compute_ms"]


@pytest.fixture
def tiny_unstructured_run(tiny_hp_run):
    from fitformer.sparsity.prune import PruneSpec, prune

    dense, _ = tiny_hp_run
    return prune(spec=PruneSpec("unstructured", 0.8), from_dir=dense.path, budget="tiny")


def test_unstructured_run_is_strictly_slower_than_hp_at_equal_density(tiny_hp_run,
                                                                     tiny_unstructured_run):
    _, hp = tiny_hp_run
    wl_hp, wl_un = workload_from_run(hp.path), workload_from_run(tiny_unstructured_run.path)
    # HP rounds K1 down: its density is at most the unstructured one's.
    assert wl_hp.overall_sparsity >= wl_un.overall_sparsity - 1e-9
    dev = _device("zcu104")
    plat = platform_of(dev)
    for design in (minimal_design("fx16"),
                   minimal_design("fx8").with_knobs("ffn_out", {"P": 4, "T": 4})):
        a = estimate_design(wl_hp, design, plat, 1, 64)
        b = estimate_design(wl_un, design, plat, 1, 64)
        for unit in ("qkv", "attn_out", "ffn_in", "ffn_out"):
            assert a.units[unit].cycles < b.units[unit].cycles
    best_hp = explore(wl_hp, dev, seq_len=64, use_cache=False)
    best_un = explore(wl_un, dev, seq_len=64, use_cache=False)
    assert best_hp.compute_ms < best_un.compute_ms


def test_estimate_json_contract_and_cache(home):
    res = runner.invoke(app, ["estimate", "--device", "zcu104", "--sparsity", "0.8", "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert CONTRACT <= rep.keys()
    assert rep["method"] == "model" and rep["precision"] in ("fx16", "fx8")
    assert rep["latency_ms"] == pytest.approx(rep["compute_ms"] + rep["call_overhead_ms"])
    assert rep["hp_split"] == {"d1": pytest.approx(0.4), "d2": 0.5}
    assert all(0 <= v <= 1 for v in rep["utilization"].values()) and rep["fits"]
    assert all(UNIT_KEYS <= u.keys() for u in rep["units"])
    # One row per unit and layer: on the shared array every linear of every layer.
    assert rep["design_family"] in ("shared", "per_op")
    unit = "array" if rep["design_family"] == "shared" else "ffn_in"
    layer_rows = [u for u in rep["units"] if u["unit"] == unit and u["op"] == "ffn_in"]
    assert sorted({u["layer"] for u in layer_rows}) == list(range(6))
    assert 1.0 <= rep["roofline_ratio"] < 3.0
    total_ms = sum(u["latency_ms"] for u in rep["units"])
    assert total_ms == pytest.approx(rep["compute_ms"])
    cached = list((home / "dse").glob("*.json"))
    assert cached
    again = json.loads(runner.invoke(app, ["estimate", "--device", "zcu104", "--sparsity",
                                           "0.8", "--json"]).stdout)
    assert again["latency_ms"] == rep["latency_ms"]
    for f in cached:
        f.write_text("{not json")
    fresh = json.loads(runner.invoke(app, ["estimate", "--device", "zcu104", "--sparsity",
                                           "0.8", "--json"]).stdout)
    assert fresh["latency_ms"] == rep["latency_ms"]


def test_estimate_table_gpu_roofline_and_small_board(home):
    res = runner.invoke(app, ["estimate", "--device", "u50", "--sparsity", "0.9"])
    assert res.exit_code == 0, res.output
    assert "array" in res.stdout and "fits: True" in res.stdout and "roofline" in res.stdout
    gpu = json.loads(runner.invoke(app, ["estimate", "--device", "rtx-4090", "--sparsity",
                                         "0.5", "--json"]).stdout)
    assert gpu["method"] == "engine model" and gpu["engine"] == "tensorrt-fp16"
    assert gpu["precision"] == "fp16" and gpu["kernels"] == 6 * 6 + 4
    launches = [u for u in gpu["units"] if u["unit"] == "kernel_launches"]
    assert launches[0]["latency_ms"] == pytest.approx(40 * 6.80e-3)
    eager = json.loads(runner.invoke(app, ["estimate", "--device", "rtx-4090", "--sparsity",
                                           "0.5", "--gpu-engine", "pytorch-eager-fp32",
                                           "--json"]).stdout)
    assert eager["precision"] == "fp32" and eager["latency_ms"] > 5 * gpu["latency_ms"]
    # PYNQ-Z2 cannot hold the activations of 128 tokens: reported, not hidden.
    pynq = json.loads(runner.invoke(app, ["estimate", "--device", "pynq-z2", "--sparsity",
                                          "0.9", "--json"]).stdout)
    assert pynq["fits"] is False and pynq["utilization"]["bram_18k"] > 1


@pytest.mark.parametrize("args,needle", [
    (["--device", "zcu104"], "either --pruned"),
    (["--device", "zcu104", "--sparsity", "0.5", "--pruned", "x"], "either --pruned"),
    (["--device", "nope", "--sparsity", "0.5"], "unknown device"),
    (["--device", "zcu104", "--sparsity", "1.5"], "--sparsity"),
    (["--device", "zcu104", "--sparsity", "0.5", "--precision", "fp32"], "offers"),
    (["--device", "rtx-4090", "--sparsity", "0.5", "--precision", "fx8"], "fp32"),
    (["--device", "zcu104", "--sparsity", "0.5", "--batch-size", "0"], "--batch-size"),
    (["--device", "zcu104", "--sparsity", "0.5", "--clock-mhz", "-5"], "--clock-mhz"),
    (["--device", "zcu104", "--sparsity", "0.5", "--banks", "3"], "--banks"),
    (["--device", "zcu104", "--pruned", "/does/not/exist"], "does not exist"),
    (["--device", "zcu104", "--sparsity", "0.5", "--clock-mhz", "nan"], "--clock-mhz"),
    (["--device", "zcu104", "--sparsity", "0.5", "--clock-mhz", "0"], "--clock-mhz"),
    (["--device", "zcu104", "--sparsity", "0.5", "--seq-len", "513"], "512 positions"),
    (["--device", "host-cpu", "--sparsity", "0", "--seq-len", "513"], "512 positions"),
    (["--device", "zcu104", "--sparsity", "0.5", "--devices", "/tmp"], "is a folder"),
])
def test_estimate_bad_input(home, args, needle):
    res = runner.invoke(app, ["estimate", *args])
    assert res.exit_code != 0
    assert needle in str(res.exception) + res.output


def test_table_on_a_board_without_uram_and_a_design_that_does_not_fit(home):
    res = runner.invoke(app, ["estimate", "--device", "ultra96-v2", "--sparsity", "0.8"])
    assert res.exit_code == 0, res.output
    assert "uram 0 of 0" in res.stdout and "fits: True" in res.stdout
    res = runner.invoke(app, ["estimate", "--device", "pynq-z2", "--sparsity", "0.8"])
    assert res.exit_code == 0 and "DOES NOT FIT" in res.stdout


def test_empty_masks_file_is_refused(tiny_hp_run, tmp_path):
    import shutil

    from safetensors.numpy import save_file

    _, hp = tiny_hp_run
    copy = tmp_path / "run"
    shutil.copytree(hp.path, copy)
    save_file({}, str(copy / "masks.safetensors"))
    with pytest.raises(FitformerError, match="no masks"):
        workload_from_run(copy)


@pytest.mark.parametrize("text,needle", [
    ("devices:\n  - id: zcu104\n    dsp: 1.5\n", "whole number"),
    ("devices:\n  - id: u50\n    price_usd: 1\n  - id: u50\n    price_usd: 2\n",
     "more than once"),
])
def test_devices_file_counts_and_duplicates(tmp_path, text, needle):
    f = tmp_path / "d.yaml"
    f.write_text(text)
    with pytest.raises(FitformerError, match=needle):
        load_catalog(f)


def test_device_without_needed_figures_is_named(tmp_path):
    f = tmp_path / "d.yaml"
    f.write_text("devices:\n  - id: myboard\n    name: My board\n    kind: fpga\n"
                 "    dsp: 100\n    bram_18k: 100\n    lut: 1000\n    ff: 2000\n"
                 "    clock_mhz: 100\n    call_overhead_ms: 0.1\n    price_usd: 10\n"
                 "    power_w: 1\n")
    dev = load_catalog(f, ["myboard"])[0]
    with pytest.raises(FitformerError, match="dram_gbytes_per_s"):
        platform_of(dev)
