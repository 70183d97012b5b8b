"""Issue 17, item 1: an fp16 (or bf16) model folder trained to NaN and was cached as a good
run. Models load for training in float32; a run with a non-finite metric is never cached;
every JSON file fitformer writes is strict JSON (null, never a bare NaN)."""

import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from fitformer.errors import FitformerError
from fitformer.training import runs


def strict_load(text):
    """json.loads that rejects NaN / Infinity (strict JSON)."""
    def reject(name):
        raise ValueError(f"non-strict JSON constant {name}")
    return json.loads(text, parse_constant=reject)


def test_write_json_is_strict(tmp_path):
    obj = {"a": float("nan"), "b": [float("inf"), -float("inf"), 1.5],
           "c": np.float32("nan"), "d": np.float64(2.5), "e": torch.tensor(float("nan")),
           "f": np.int64(3), "g": (1, None), "h": "NaN"}
    runs.write_json(tmp_path / "x.json", obj)
    got = strict_load((tmp_path / "x.json").read_text())
    assert got == {"a": None, "b": [None, None, 1.5], "c": None, "d": 2.5, "e": None,
                   "f": 3, "g": [1, None], "h": "NaN"}
    assert "NaN" not in runs.dumps_strict({"x": math.nan}) and \
        strict_load(runs.dumps_strict({"x": math.inf})) == {"x": None}


def test_non_finite_metrics_are_never_written_or_cached(tmp_path):
    metrics = {"accuracy": {"dev": {"fp32": 0.5}}, "loss": {"dev": float("nan"),
                                                              "train_last": float("inf")}}
    with pytest.raises(FitformerError, match=r"loss\.dev, loss\.train_last.*not cached"):
        runs.write_json(tmp_path / "metrics.json", metrics)
    assert not (tmp_path / "metrics.json").exists()
    # Null metrics (not computed) are fine.
    runs.write_json(tmp_path / "metrics.json", {"accuracy": {"dev": {"fx8": None}}})


def test_a_run_cached_with_nan_metrics_is_not_found(home):
    key = {"kind": "test", "n": 1}
    path = runs.run_path(key)
    path.mkdir(parents=True)
    for f in ("config.json", "model.safetensors", "run.json"):
        (path / f).write_text("{}")
    (path / "metrics.json").write_text('{"loss": {"dev": NaN}}')   # as written before
    assert runs.find_run(key) is None
    (path / "metrics.json").write_text('{"loss": {"dev": 0.5}}')
    assert runs.find_run(key) == path


def _fp16_bert(folder, dtype=torch.float16):
    """The issue's model: a 2-layer BERT (hidden 312, 12 heads, FFN 1200) saved after
    .half(), with MiniLM's tokenizer (same vocabulary)."""
    from transformers import BertConfig, BertForSequenceClassification

    from fitformer.models.loading import load_tokenizer, resolve_model

    cfg = BertConfig(hidden_size=312, num_hidden_layers=2, num_attention_heads=12,
                     intermediate_size=1200, num_labels=2)
    torch.manual_seed(0)
    model = BertForSequenceClassification(cfg).to(dtype)
    model.save_pretrained(folder)
    load_tokenizer(resolve_model("default")).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_folders_load_in_float32(home, tmp_path, dtype):
    from fitformer.models.loading import load_classifier, resolve_model

    folder = _fp16_bert(tmp_path / "half", dtype)
    net = load_classifier(resolve_model(str(folder)), ("neg", "pos"))
    assert {p.dtype for p in net.parameters()} == {torch.float32}
    x = torch.tensor([[101, 2307, 102]])
    assert torch.isfinite(net(input_ids=x).logits).all()


def test_issue_example_fp16_finetune_tiny_trains_finite_and_strict(home, tmp_path):
    # `fitformer finetune --model DIR --budget tiny` on the fp16 folder: it exited 0 with
    # every loss nan and cached the run. Now it trains in float32: finite losses, strict
    # JSON files, and the run is cached only because its metrics are finite.
    folder = _fp16_bert(tmp_path / "fp16")
    env = dict(os.environ, FITFORMER_HOME=str(home))
    env.pop("FITFORMER_DEBUG", None)
    proc = subprocess.run([sys.executable, "-m", "fitformer", "finetune", "--model",
                           str(folder), "--budget", "tiny", "--json"],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr
    out = strict_load(proc.stdout)
    assert out["cached"] is False
    run_dir = out["run_dir"]
    metrics = strict_load(open(os.path.join(run_dir, "metrics.json")).read())
    for name in ("train_first", "train_last", "dev", "test"):
        assert math.isfinite(metrics["loss"][name]), (name, metrics["loss"])
    assert strict_load(open(os.path.join(run_dir, "config.json")).read())["dtype"] == "float32"
    for f in os.listdir(run_dir):
        if f.endswith(".json") and f not in ("tokenizer.json",):
            strict_load(open(os.path.join(run_dir, f)).read())
    shutil.rmtree(run_dir, ignore_errors=True)
