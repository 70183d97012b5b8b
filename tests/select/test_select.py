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
    for lc in (500.0, 100.0, 5.0, 0.5, 0.01):
        res = _select(dense, prices, tmp_path / f"lc{lc}", latency_ms=lc,
                      max_accuracy_drop=0.5)
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
    # LC 100 ms needs HP on the Ultra96 (dense takes ~280 ms there): a pruned point wins.
    lc100 = json.loads((tmp_path / "lc100.0" / "report.json").read_text())
    u96 = next(d for d in lc100["devices"] if d["id"] == "ultra96-v2")
    assert lc100["best_device"] == "ultra96-v2" and u96["sparsity"] > 0
    art = lc100["artifacts"]
    for key in ("model_dir", "container", "design_json", "report_html", "accuracy_plot",
                "latency_plot", "utilization_plot"):
        assert key in art and (tmp_path / "lc100.0").exists()
    # Once the profile exists, a new query trains nothing.
    import fitformer.sparsity.prune as prune_mod

    def no_training(*a, **k):
        raise AssertionError("a cached profile point was trained again")

    monkeypatch.setattr(prune_mod, "train_classifier", no_training)
    again = _select(dense, prices, tmp_path / "again", latency_ms=100.0,
                    max_accuracy_drop=0.5)
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
