"""The main job end to end on real data (tiny budget), its report and its input checks."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from fitformer.cli import app
from fitformer.errors import FitformerError
from fitformer.select import select
from fitformer.select.report import Report

runner = CliRunner()
DEVICES = ["ultra96-v2", "u200", "rtx-4090"]


@pytest.fixture
def prices(tmp_path):
    f = tmp_path / "prices.yaml"
    f.write_text("devices:\n  - id: u200\n    price_usd: 1150\n")
    return f


def _select(dense, prices, out, **kw):
    return select(dense_dir=dense.path, budget="tiny", devices_file=prices, only=DEVICES,
                  out=out, log=lambda m: None, **kw)


def test_tighter_latency_never_picks_a_cheaper_device(in_tiny_home, prices, tmp_path,
                                                     monkeypatch):
    _, dense = in_tiny_home
    chosen = []
    for lc in (500.0, 10.0, 0.5, 0.3, 0.01):
        # The default AC falls below the tiny dense model's majority rate: points must
        # beat the majority class instead (a user's AC there is refused).
        res = _select(dense, prices, tmp_path / f"lc{lc}", latency_ms=lc)
        rep = res.report
        Report.model_validate(rep)
        best = next((d for d in rep["devices"] if d["id"] == rep["best_device"]), None)
        chosen.append((lc, rep["best_device"], best["price_usd"] if best else math.inf))
        if best is not None:
            assert best["latency_ms"] <= lc and best["fits"]
            assert best["accuracy_dev"] >= rep["target_accuracy_dev"]
            assert res.exit_code == 0
    prices_seen = [p for _, _, p in chosen]
    assert prices_seen == sorted(prices_seen), chosen
    assert len({d for _, d, _ in chosen if d}) >= 2, chosen           # low end to high end
    assert chosen[-1][1] is None                                       # 10 us: nobody
    # LC 10 ms needs HP on the Ultra96 (dense takes ~14 ms there on the shared array at
    # fx8): a pruned point wins.
    lc10 = json.loads((tmp_path / "lc10.0" / "report.json").read_text())
    u96 = next(d for d in lc10["devices"] if d["id"] == "ultra96-v2")
    assert lc10["best_device"] == "ultra96-v2" and u96["sparsity"] > 0
    art = lc10["artifacts"]
    for key in ("model_dir", "container", "design_json", "report_html", "accuracy_plot",
                "latency_plot", "utilization_plot"):
        assert key in art and (tmp_path / "lc10.0").exists()
    # Once the profile exists, a new query trains nothing.
    import fitformer.sparsity.prune as prune_mod

    def no_training(*a, **k):
        raise AssertionError("a cached profile point was trained again")

    monkeypatch.setattr(prune_mod, "train_classifier", no_training)
    again = _select(dense, prices, tmp_path / "again", latency_ms=10.0)
    assert again.report["best_device"] == "ultra96-v2"


def test_infeasible_accuracy_reports_none_with_exit_3(in_tiny_home, tmp_path):
    _, dense = in_tiny_home
    # The CLI's dense reference is the full fine-tune; the API takes the tiny one.
    res = select(dense_dir=dense.path, budget="tiny", only=["rtx-4090", "jetson-orin-nano"],
                 latency_ms=100.0, min_accuracy=0.999, out=tmp_path / "r", log=lambda m: None)
    assert res.exit_code == 3 and res.report["best_device"] is None
    for d in res.report["devices"]:
        assert d["reason"] == "accuracy" and not d["feasible"]
        assert "AC <=" in d["would_pass_with"]
    Report.model_validate(json.loads((tmp_path / "r" / "report.json").read_text()))


@pytest.mark.parametrize("args,needle", [
    (["--latency-ms", "-1"], "--latency-ms"),
    (["--latency-ms", "0"], "--latency-ms"),
    (["--latency-ms", "nan"], "--latency-ms"),
    (["--min-accuracy", "1.5"], "--min-accuracy"),
    (["--min-accuracy", "0.8", "--max-accuracy-drop", "0.1"], "not both"),
    (["--max-accuracy-drop", "1"], "--max-accuracy-drop"),
    (["--batch-size", "0"], "--batch-size"),
    (["--only", "nope"], "unknown device"),
    (["--level2-density", "0.3"], "grid"),
    (["--clock-mhz", "inf"], "--clock-mhz"),
    (["--out", "/proc/nope"], "--out"),
    (["--precision", "fx8", "--only", "jetson-orin-nano"], "none of the devices"),
])
def test_impossible_inputs_are_rejected_before_any_work(empty_home, args, needle):
    res = runner.invoke(app, ["select", *args])
    assert res.exit_code != 0
    msg = str(res.exception) + res.output
    assert needle in msg and "fetch" not in msg      # rejected before reaching the data


def test_malformed_devices_file_is_rejected_before_any_work(empty_home, tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("devices:\n  - id: zcu104\n    dsp: -5\n")
    with pytest.raises(FitformerError, match="zcu104"):
        select(devices_file=f, out=False)


def test_incomplete_catalog_entries_are_infeasible_rows_and_the_walk_goes_on(in_tiny_home,
                                                                            tmp_path):
    """Issue 17, item 4: FPGA figures 0, a clock 0, a GPU with 0 TFLOPS, a GPU without the
    default engine's fp16 peak: each row infeasible naming what is missing; the next device
    is chosen and the report written."""
    _, dense = in_tiny_home
    f = tmp_path / "broken.yaml"
    f.write_text("""
devices:
  - id: zcu104
    price_usd: 10
    dsp: 0
    bram_18k: 0
    lut: 0
    ff: 0
  - id: zcu102
    price_usd: 11
    clock_mhz: 0
  - id: gpu-zero
    name: GPU with 0 TFLOPS
    kind: gpu
    peak_tflops: 0
    dram_gbytes_per_s: 100
    call_overhead_ms: 0.05
    price_usd: 12
    power_w: 50
  - id: gpu-fp32-only
    name: GPU without an fp16 peak
    kind: gpu
    peak_tflops: 10
    dram_gbytes_per_s: 100
    call_overhead_ms: 0.05
    price_usd: 13
    power_w: 50
""")
    res = select(dense_dir=dense.path, budget="tiny", devices_file=f,
                 only=["zcu104", "zcu102", "gpu-zero", "gpu-fp32-only", "rtx-4090"],
                 latency_ms=500.0, out=tmp_path / "r",
                 log=lambda m: None)
    rows = {d["id"]: d for d in res.report["devices"]}
    assert res.exit_code == 0 and res.report["best_device"] == "rtx-4090"
    for i in ("zcu104", "zcu102", "gpu-zero", "gpu-fp32-only"):
        assert not rows[i]["feasible"] and rows[i]["reason"] == "incomplete_figures", rows[i]
    for field in ("dsp", "bram_18k", "lut", "ff"):
        assert f"{field} is 0" in rows["zcu104"]["would_pass_with"]
    assert "clock_mhz is 0" in rows["zcu102"]["would_pass_with"]
    assert "peak_tflops" in rows["gpu-zero"]["would_pass_with"]
    assert "peak_tflops_fp16" in rows["gpu-fp32-only"]["would_pass_with"]
    rep = json.loads((tmp_path / "r" / "report.json").read_text())
    Report.model_validate(rep)
    assert rep["best_device"] == "rtx-4090"


def test_host_is_measured_before_training_and_its_load_and_spread_shown(
        tiny_dense, home, tmp_path, monkeypatch):
    """Issue 17, item 6: the host CPU's figures are taken before the query trains anything
    (here: the dense reference), and the table and report.json show load and spread."""
    import importlib

    import fitformer.hardware.backends.host_cpu as E

    F = importlib.import_module("fitformer.training.finetune")   # the module, not the function

    _, dense = tiny_dense
    events = []

    def fake_measure(wl, model, pruned, batch, seq_len, repeats, tgt_len):
        events.append(("measure", wl.overall_sparsity))
        return E._judged({"samples_ms": [23.5, 23.6, 23.7, 23.7, 23.7, 23.8, 24.0],
                          "backend": "dense", "load_avg_1min": 0.9, "cpus": 2,
                          "attempts": 1})

    def fake_finetune(*a, **k):
        if k.get("cached_only"):            # the plan line looks it up: not cached yet
            from fitformer.training.runs import Uncached

            return Uncached({"kind": "finetune", "test": "not cached"})
        events.append(("train", None))
        return dense

    monkeypatch.setattr(E, "_measure_host", fake_measure)
    monkeypatch.setattr(F, "finetune", fake_finetune)
    res = runner.invoke(app, ["select", "--only", "host-cpu,rtx-4090", "--budget", "tiny",
                              "--latency-ms", "500",
                              "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    kinds = [k for k, _ in events]
    assert kinds.index("train") == len(kinds) - 1 and kinds.count("measure") == 6, events
    host = next(d for d in json.loads((tmp_path / "r" / "report.json").read_text())
                ["devices"] if d["id"] == "host-cpu")
    m = host["measurement"]
    assert m["load_avg_1min"] == 0.9 and m["cpus"] == 2 and m["steady"] is True
    assert m["spread"] == pytest.approx(E.sample_spread([23.5, 23.6, 23.7, 23.7, 23.7, 23.8,
                                                         24.0]))
    table = " ".join(res.output.replace("│", " ").split())     # cells wrap in the table
    # What ran (the measured model here is dense PyTorch), the load and the spread.
    assert "PyTorch," in table and "load" in table and "0.9/2" in table, res.output
    assert "spread" in table, res.output


def test_select_hls_writes_the_project_of_the_chosen_design(in_tiny_home, prices, tmp_path):
    """select --hls (issue 19, item 4): the answer's project at the very design select
    chose (knobs, family and non-linear units of design.json); a GPU answer gets none,
    with the reason; a later answer without --hls removes the stale project."""
    _, dense = in_tiny_home
    out = tmp_path / "sel"
    res = _select(dense, prices, out, latency_ms=10.0, hls_sentences=2)
    rep = res.report
    assert rep["best_device"] == "ultra96-v2" and rep["artifacts"]["hls_project"] == "hls"
    design = json.loads((out / "design.json").read_text())
    prj = json.loads((out / "hls" / "project.json").read_text())
    assert prj["device"] == "ultra96-v2" and prj["sentences"] == 2
    assert prj["design"]["knobs"] == design["design"]
    assert prj["design"]["family"] == design["design_family"]
    assert prj["design"]["nonlinear"] == design["nonlinear"]
    # sized for the tokens select estimated (its --seq-len), at least the run's max_length
    assert prj["seq_len"] == rep["constraints"]["seq_len"] >= rep["max_length"]
    best = next(d for d in rep["devices"] if d["id"] == "ultra96-v2")
    assert prj["precision"] == design["precision"] == best["precision"]
    assert (out / "hls" / "firmware" / "fitformer.cpp").is_file()
    gpu = select(dense_dir=dense.path, budget="tiny", only=["rtx-4090"], latency_ms=10.0,
                 out=out, hls_sentences=2, log=lambda m: None)
    assert gpu.report["best_device"] == "rtx-4090"
    assert "is a gpu; HLS projects are for FPGAs" in gpu.report["hls_not_written"]
    assert not (out / "hls").exists()                   # the earlier answer's project
    assert "hls_not_written" in json.loads((out / "report.json").read_text())
