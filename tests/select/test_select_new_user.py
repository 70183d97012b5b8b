"""Faults a new user met with `select` (issue 18): stale files in a reused --out, a model/
folder select did not write, names in --out that block its files, --model beside --dense,
a --dense run of the other task or dataset, and a dataset whose dev split is too small."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fitformer.cli import app
from fitformer.errors import FitformerError
from fitformer.select import select
from fitformer.select.outdir import MARKER, OWNED_FILES, check_out_dir
from fitformer.select.profile import MIN_DEV_SENTENCES, Profile
from fitformer.select.report import write_outputs

runner = CliRunner()


def _report(run_dir: Path, best: str | None) -> dict:
    """A report as select builds it: one GPU, chosen at the dense point or not."""
    acc = {s: dict.fromkeys(("fp32", "fx16", "fx8"), a) for s, a in (("dev", 0.85),
                                                                     ("test", 0.84))}
    row = {"id": "rtx-4090", "name": "RTX 4090", "kind": "gpu", "price_usd": 1599.0,
           "power_w": 450.0, "precision": "fp32", "latency_ms": 0.4, "compute_ms": 0.3,
           "call_overhead_ms": 0.1, "sparsity": 0.0, "hp_split": None,
           "accuracy_dev": 0.85, "accuracy_test": 0.84, "fits": True,
           "weights_on_chip": None, "feasible": best is not None,
           "reason": "ok" if best else "latency", "measurement": None, "curve": {}}
    return {"schema_version": 1, "best_device": best,
            "constraints": {"latency_ms": 10.0, "batch_size": 1, "seq_len": 128,
                            "max_accuracy_drop": 0.05},
            "target_accuracy_dev": 0.8, "metric": {"name": "accuracy", "scale_max": 1},
            "task": "classification", "objective": "price", "model": "default",
            "dataset": "rotten-tomatoes", "pattern": "hp", "budget": "tiny",
            "max_length": 64, "dense_accuracy": {"dev": 0.85, "test": 0.84},
            "profile": [{"sparsity": 0.0, "achieved_sparsity": 0.0, "hp_split": None,
                         "accuracy": acc, "run_dir": str(run_dir)}],
            "devices": [row], "artifacts": {}}


@pytest.fixture
def run_dir(tmp_path) -> Path:
    d = tmp_path / "run"
    d.mkdir()
    (d / "config.json").write_text("{}")
    (d / "run.json").write_text("{}")
    return d


def _write(report, out):
    write_outputs(report, out, Profile(budget="tiny", log=lambda m: None))


def test_a_reused_out_keeps_no_file_of_the_earlier_answer(tmp_path, run_dir):
    out = tmp_path / "out"
    _write(_report(run_dir, "rtx-4090"), out)
    assert (out / "model" / MARKER).is_file() and (out / "design.json").is_file()
    (out / "model.fitf").write_bytes(b"an HP container of an earlier, sparser answer")
    (out / "utilization.png").write_bytes(b"an earlier FPGA's plot")
    (out / "notes.txt").write_text("the user's own file")
    # The same folder, an answer of none: the model, container, design and the plot of
    # the earlier answer are gone; the user's file stays.
    _write(_report(run_dir, None), out)
    assert sorted(p.name for p in out.iterdir()) == [
        "accuracy.png", "latency.png", "notes.txt", "report.html", "report.json"]
    rep = json.loads((out / "report.json").read_text())
    assert rep["best_device"] is None and "model_dir" not in rep["artifacts"]
    # A dense answer again: no container beside it (a dense point has none).
    (out / "model.fitf").write_bytes(b"stale")
    _write(_report(run_dir, "rtx-4090"), out)
    assert not (out / "model.fitf").exists() and (out / "model" / "config.json").is_file()


def test_a_model_folder_select_did_not_write_is_refused(tmp_path, run_dir):
    out = tmp_path / "out"
    (out / "model").mkdir(parents=True)
    (out / "model" / "weights.bin").write_bytes(b"the user's own model")
    with pytest.raises(FitformerError, match="was not written by fitformer select") as e:
        _write(_report(run_dir, "rtx-4090"), out)
    assert "move it away or give another --out" in str(e.value)
    assert [p.name for p in out.iterdir()] == ["model"]          # nothing written
    assert (out / "model" / "weights.bin").read_bytes() == b"the user's own model"
    # A model/ from a select that predates the marker: its report.json lists it.
    (out / "model" / "run.json").write_text("{}")
    (out / "report.json").write_text(json.dumps({"artifacts": {"model_dir": "model"}}))
    _write(_report(run_dir, "rtx-4090"), out)
    assert not (out / "model" / "weights.bin").exists()


@pytest.mark.parametrize("blocker,what", [
    ("model", "file"), ("report.json", "dir"), ("model.fitf", "dir"), ("design.json", "dir"),
])
def test_names_that_block_selects_files_are_refused_before_anything(
        empty_home, tmp_path, blocker, what):
    out = tmp_path / "out"
    out.mkdir()
    path = out / blocker
    path.mkdir() if what == "dir" else path.write_text("mine")
    with pytest.raises(FitformerError, match=f"{blocker} is a (folder|file|not)"):
        check_out_dir(out)
    # Through the CLI: refused before the data is looked at (no fetch hint) or anything
    # is written.
    res = runner.invoke(app, ["select", "--out", str(out)])
    assert isinstance(res.exception, FitformerError)
    assert "fetch" not in str(res.exception) + res.output
    assert str(path) in str(res.exception)
    assert [p.name for p in out.iterdir()] == [blocker]
    assert blocker in OWNED_FILES + ("model",)


def _fake_run(tmp_path, name, **run) -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "run.json").write_text(json.dumps(run))
    return d


@pytest.mark.parametrize("cmd", ["select", "profile"])
def test_model_beside_dense_is_refused(empty_home, tmp_path, cmd):
    dense = _fake_run(tmp_path, "dense", task="classification", dataset="rotten-tomatoes")
    res = runner.invoke(app, [cmd, "--model", "bert-base-uncased", "--dense", str(dense)])
    assert isinstance(res.exception, FitformerError), res.exception
    msg = str(res.exception)
    assert "--model bert-base-uncased and --dense" in msg and "drop --model" in msg


@pytest.mark.parametrize("cmd", ["select", "profile"])
def test_a_classification_dense_run_with_task_translation_is_a_clear_error(
        empty_home, tmp_path, cmd):
    dense = _fake_run(tmp_path, "dense", task="classification", dataset="rotten-tomatoes")
    res = runner.invoke(app, [cmd, "--task", "translation", "--dense", str(dense)])
    assert isinstance(res.exception, FitformerError), res.exception
    msg = str(res.exception)
    assert f"--dense {dense} is a classification run" in msg
    assert "--task translation give a translation run" in msg


def test_a_dense_run_of_other_data_names_dense(home, tmp_path, monkeypatch):
    dense = _fake_run(tmp_path, "dense", task="classification", dataset="reviews.csv",
                      data_split="local file reviews.csv; ...")
    out = tmp_path / "out"
    with pytest.raises(FitformerError) as e:
        select(dense_dir=dense, budget="tiny", only=["rtx-4090"], out=out,
               log=lambda m: None)
    msg = str(e.value)
    assert msg.startswith(f"--dense {dense} was trained on 'reviews.csv', not "
                          "'rotten-tomatoes'") and "--from" not in msg
    assert not out.exists()


def _no_training(monkeypatch):
    import importlib

    for name in ("fitformer.sparsity.prune", "fitformer.training.finetune"):
        mod = importlib.import_module(name)

        def boom(*a, **k):
            raise AssertionError("trained although the dataset should have been refused")

        monkeypatch.setattr(mod, "train_classifier", boom)


@pytest.mark.parametrize("rows,classes", [(12, 2), (150, 2), (400, 1)])
def test_a_dev_split_too_small_to_decide_on_is_refused_before_training(
        home, tmp_path, monkeypatch, rows, classes):
    """A 12-row file gives a 1-sentence dev split (majority rate 1.0, so the old refusal
    asked for '--min-accuracy above 1.0000'); 150 rows give 15 dev sentences; a file of one
    class is no classification task (the loader or select refuses it)."""
    f = tmp_path / "small.csv"
    f.write_text("text,label\n" + "".join(
        f"review number {i} says {'good' if i % classes else 'bad'},"
        f"{'pos' if i % classes else 'neg'}\n" for i in range(rows)))
    _no_training(monkeypatch)
    out = tmp_path / "out"
    for cmd in ("select", "profile"):
        res = runner.invoke(app, [cmd, "--dataset", str(f), "--budget", "tiny",
                                  "--out", str(out)][:None if cmd == "select" else -2])
        assert isinstance(res.exception, FitformerError), res.output
        msg = str(res.exception)
        assert "small.csv" in msg and "1.0000" not in msg, msg
        if classes == 2:
            n_dev = min(1000, rows // 10)
            assert f"dev split has {n_dev} sentence" in msg
            assert f"at least {MIN_DEV_SENTENCES} dev sentences" in msg
    assert not out.exists()
