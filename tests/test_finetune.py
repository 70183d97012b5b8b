"""A small real fine-tune on real Rotten Tomatoes sentences (budget ``tiny``)."""

import json

import pytest
import torch

from fitformer.data import load_dataset
from fitformer.models import load_classifier, load_tokenizer, resolve_model
from fitformer.training import finetune
from fitformer.training.evaluation import evaluate_classifier
from fitformer.training.loop import Encoded, TrainConfig, TrainHook, train_classifier


@pytest.fixture
def tiny_run(in_tiny_home):
    return in_tiny_home


def test_tiny_finetune_learns(tiny_run):
    _, result = tiny_run
    m = result.metrics
    assert not result.cached
    assert m["loss"]["train_last"] < m["loss"]["train_first"] - 0.05
    assert m["split_sizes"] == {"train": 320, "dev": 160, "test": 160}
    # Real learning on 160 held-out sentences: better than the majority class (57.8%).
    assert m["accuracy"]["dev"]["fp32"] > 0.6


def test_run_directory_follows_the_contract(tiny_run):
    home, result = tiny_run
    path = result.path
    assert path.parent == home / "runs"
    for f in ("config.json", "model.safetensors", "tokenizer.json", "metrics.json",
              "run.json"):
        assert (path / f).is_file(), f
    assert not (path / "checkpoint.pt").exists()
    run = json.loads((path / "run.json").read_text())
    for k in ("model", "dataset", "data_split", "task", "pattern", "density", "hp_split",
              "pruner", "budget", "max_length", "seed", "fitformer_version",
              "torch_threads"):
        assert k in run, k
    import torch

    assert run["torch_threads"] == torch.get_num_threads()
    m = json.loads((path / "metrics.json").read_text())
    assert set(m["accuracy"]["dev"]) == {"fp32", "fx16", "fx8"}
    # 16-bit fixed point is within a few sentences of fp32; 8-bit is measured, not assumed.
    assert abs(m["accuracy"]["dev"]["fx16"] - m["accuracy"]["dev"]["fp32"]) <= 0.02
    assert 0.0 <= m["accuracy"]["dev"]["fx8"] <= 1.0
    for k in ("schema_version", "task", "loss", "sparsity", "hp_split", "examples_per_s",
              "wall_time_s", "budget", "seed"):
        assert k in m, k
    assert m["sparsity"]["overall"] == 0.0 and len(m["sparsity"]["per_layer"]) == 36


def test_cached_run_is_reused_and_reloads_with_same_predictions(tiny_run):
    _, first = tiny_run
    again = finetune("default", "rotten-tomatoes", budget="tiny")
    assert again.cached and again.path == first.path
    # The run folder loads with the same loader as any model and reproduces dev accuracy.
    ref = resolve_model(str(first.path))
    net = load_classifier(ref)
    data = load_dataset("rotten-tomatoes")
    dev = Encoded(load_tokenizer(ref), data.dev.subset(160), 64)
    assert evaluate_classifier(net, dev).accuracy == pytest.approx(
        first.metrics["accuracy"]["dev"]["fp32"], abs=1e-9)


class _Crash(TrainHook):
    def __init__(self, at: int):
        self.at = at

    def on_step_end(self, model, step, total_steps):
        if step == self.at:
            raise KeyboardInterrupt


def test_interrupted_training_resumes_to_the_same_weights(real_cache, tmp_path):
    data = load_dataset("rotten-tomatoes")
    ref = resolve_model("default")
    tok = load_tokenizer(ref)
    train = Encoded(tok, data.train.subset(48), 32)
    cfg = TrainConfig(max_steps=4, batch_size=16, checkpoint_every=2, max_length=32)

    def fresh():
        torch.manual_seed(0)
        return load_classifier(ref, data.label_names)

    straight = fresh()
    train_classifier(straight, train, cfg)
    ckpt = tmp_path / "checkpoint.pt"
    interrupted = fresh()
    with pytest.raises(KeyboardInterrupt):
        train_classifier(interrupted, train, cfg, checkpoint=ckpt, hooks=[_Crash(3)])
    resumed = fresh()
    result = train_classifier(resumed, train, cfg, checkpoint=ckpt, hooks=[_Crash(-1)])
    assert result.resumed_from_step == 2 and result.steps == 4
    for a, b in zip(straight.parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_run_files_get_the_usual_permissions(tiny_run):
    import os
    import stat

    _, result = tiny_run
    umask = os.umask(0)
    os.umask(umask)
    for f in result.path.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~umask, f.name


def test_a_run_in_training_is_locked_against_a_second_process(tmp_path, monkeypatch):
    import subprocess
    import sys

    from fitformer.training.runs import _unlock, partial_path, start_partial

    monkeypatch.setenv("FITFORMER_HOME", str(tmp_path))
    key = {"kind": "test", "n": 1}
    partial = start_partial(key)
    code = ("import sys; from fitformer.training.runs import start_partial\n"
            "try:\n    start_partial({'kind': 'test', 'n': 1})\nexcept Exception as e:\n"
            "    print(type(e).__name__, e); sys.exit(3)\n")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={**__import__("os").environ, "FITFORMER_HOME": str(tmp_path)})
    assert other.returncode == 3 and "another fitformer process" in other.stdout
    assert start_partial(key) == partial == partial_path(key)   # the holder may re-enter
    _unlock(partial)
    again = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={**__import__("os").environ, "FITFORMER_HOME": str(tmp_path)})
    assert again.returncode == 0, again.stdout
