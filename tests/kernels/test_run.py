"""`fitformer run --pruned DIR` and the host CPU measured with the HP kernel (issue 8)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from fitformer.cli import app
from fitformer.errors import FitformerError

runner = CliRunner()


def test_run_pruned_reports_accuracy_equality_and_latency(tiny_hp_run):
    _, hp = tiny_hp_run
    res = runner.invoke(app, ["run", "--pruned", str(hp.path), "--dev-examples", "64",
                              "--repeats", "3", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["backend"] == "hp-cpu" and out["converted_layers"] == 36
    assert out["pattern"] == "hp" and out["achieved_sparsity"] >= 0.8
    assert out["max_abs_logit_diff"] <= 1e-4
    assert out["dev_examples"] == 64 and 0.0 <= out["dev_accuracy"] <= 1.0
    assert len(out["samples_ms"]["hp"]) == 3 and out["latency_ms"]["hp"] > 0
    # On the whole dev split the recorded accuracy is reproduced by the HP kernel.
    full = runner.invoke(app, ["run", "--pruned", str(hp.path), "--repeats", "1", "--json"])
    full_out = json.loads(full.output)
    assert full_out["dev_accuracy"] == pytest.approx(full_out["recorded_dev_accuracy"],
                                                     abs=1.5 / full_out["dev_examples"])
    text = runner.invoke(app, ["run", "--pruned", str(hp.path), "--dev-examples", "16",
                               "--repeats", "1"])
    assert "hp-cpu" in text.output and "median latency" in text.output


def test_run_int8_names_its_kernel_and_compares_with_fx8(tiny_hp_run):
    _, hp = tiny_hp_run
    res = runner.invoke(app, ["run", "--pruned", str(hp.path), "--int8", "--repeats", "1",
                              "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["backend"] == "hp-cpu-int8" and out["converted_layers"] == 36
    assert out["recorded_precision"] == "fx8" and out["int8_path"] in (
        "generic", "avx2", "avx512-vnni")
    rec = json.loads((hp.path / "metrics.json").read_text())["accuracy"]["dev"]["fx8"]
    assert out["recorded_dev_accuracy"] == rec
    # int8 codes of both operands: the logits move, but stay near the fp32 ones.
    assert 0 < out["max_abs_logit_diff"] <= 0.5
    assert abs(out["dev_accuracy"] - rec) <= 0.1
    text = runner.invoke(app, ["run", "--pruned", str(hp.path), "--int8",
                               "--dev-examples", "16", "--repeats", "1"])
    assert "int8 HP kernel" in text.output


@pytest.mark.parametrize("args,msg", [
    (["--pruned", "/no/such/run"], "does not exist"),
    (["--pruned", "{dense}"], "not a pruned run"),
    (["--pruned", "{hp}", "--batch-size", "0"], "must be >= 1"),
    (["--pruned", "{hp}", "--repeats", "0"], "must be >= 1"),
    (["--pruned", "{hp}", "--seq-len", "600"], "positions"),
])
def test_run_bad_input(tiny_hp_run, args, msg):
    dense, hp = tiny_hp_run
    args = [a.format(dense=dense.path, hp=hp.path) for a in args]
    res = runner.invoke(app, ["run", *args, "--dev-examples", "8"])
    assert isinstance(res.exception, FitformerError), res.output
    assert msg in str(res.exception)


def test_host_cpu_latency_uses_the_hp_kernel(home):
    res = runner.invoke(app, ["estimate", "--device", "host-cpu", "--sparsity", "0.9",
                              "--json"])
    assert res.exit_code == 0, res.output
    sparse = json.loads(res.output)
    assert sparse["method"] == "measured" and sparse["backend"] == "hp-cpu"
    assert sparse["sparsity"] > 0.9 and len(sparse["samples_ms"]) == 10
    res = runner.invoke(app, ["estimate", "--device", "host-cpu", "--sparsity", "0", "--json"])
    dense = json.loads(res.output)
    assert dense["backend"] == "dense" and dense["sparsity"] == 0.0
