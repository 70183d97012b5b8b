"""select before it trains: the majority-class floor on AC, the plan line, checks before
writing, and the dataset read once per query (issue 18)."""

from __future__ import annotations

import pytest

from fitformer.errors import FitformerError
from fitformer.select import select
from fitformer.select.profile import GRID, Profile


def _no_training(monkeypatch):
    import importlib

    prune_mod = importlib.import_module("fitformer.sparsity.prune")
    ft_mod = importlib.import_module("fitformer.training.finetune")   # not the function

    def boom(*a, **k):
        raise AssertionError("trained although the query should have been refused first")

    monkeypatch.setattr(prune_mod, "train_classifier", boom)
    monkeypatch.setattr(ft_mod, "train_classifier", boom)


def test_a_floor_at_or_below_the_majority_class_is_refused_before_training(
        in_tiny_home, tmp_path, monkeypatch):
    _, dense = in_tiny_home
    maj = dense.metrics["majority_rate"]["dev"]
    dense_dev = dense.metrics["accuracy"]["dev"]["fp32"]
    _no_training(monkeypatch)
    out = tmp_path / "never"
    with pytest.raises(FitformerError, match="majority-class rate") as e:
        select(dense_dir=dense.path, budget="tiny", only=["rtx-4090"], min_accuracy=maj,
               out=out, log=lambda m: None)
    assert f"{maj:.4f}" in str(e.value) and "--min-accuracy above" in str(e.value)
    # A drop that lands on or below the majority rate: refused with the drop that works.
    drop = dense_dev - maj + 0.01
    with pytest.raises(FitformerError, match="majority-class rate") as e:
        select(dense_dir=dense.path, budget="tiny", only=["rtx-4090"],
               max_accuracy_drop=drop, out=out, log=lambda m: None)
    assert "--max-accuracy-drop" in str(e.value)
    assert not out.exists()                  # nothing written for a refused query


def test_the_default_floor_never_sits_below_the_majority_class(in_tiny_home, tmp_path):
    _, dense = in_tiny_home
    maj = dense.metrics["majority_rate"]["dev"]
    dense_dev = dense.metrics["accuracy"]["dev"]["fp32"]
    lines = []
    res = select(dense_dir=dense.path, budget="tiny", only=["rtx-4090"], latency_ms=500.0,
                 out=False, log=lines.append)
    rep = res.report
    assert rep["majority_rate_dev"] == pytest.approx(maj)
    if dense_dev - 0.05 <= maj:
        assert rep["target_accuracy_dev"] == pytest.approx(maj)
        assert "majority-class rate" in rep["target_note"]
        assert any(line.startswith("note: the default AC") for line in lines)
    else:
        assert rep["target_accuracy_dev"] == pytest.approx(dense_dev - 0.05)
        assert rep["target_note"] is None
    chosen = next((d for d in rep["devices"] if d["feasible"]), None)
    if chosen is not None:
        assert chosen["accuracy_dev"] > maj


def test_the_plan_names_what_is_cached_and_what_will_be_trained(in_tiny_home):
    _, dense = in_tiny_home
    plan = Profile(budget="tiny", dense_dir=dense.path).plan()
    assert plan.items[0].cached and plan.items[0].what == "dense reference (given)"
    pruned = plan.items[1:]
    assert [i.sparsity for i in pruned] == list(GRID[1:])
    assert all(i.steps == 8 for i in pruned)            # the tiny budget's steps per point
    # Points chain: once one is missing, every later one is missing too.
    flags = [i.cached for i in pruned]
    assert flags == sorted(flags, reverse=True)
    text = plan.text()
    assert text.startswith("plan: ")
    if plan.to_train:
        assert f"hp {plan.to_train[0].sparsity:g} 8 steps" in text and "min in all" in text
        assert plan.minutes(plan.to_train[0]) > 0
    own = Profile(budget="tiny").plan()               # the budget's own dense reference
    assert own.items[0].what == "dense reference (tiny budget)"
    assert own.items[0].steps == 30                   # 3 epochs x ceil(320 / 32)


def test_the_translation_plan_names_the_hour_long_dense_run_first(home):
    """--task translation: whatever --budget says, the dense reference is the from-scratch
    model of the default budget; the plan line says so, with its steps, before training."""
    plan = Profile(task="translation", dataset="tatoeba-en-fr", budget="tiny").plan()
    dense = plan.items[0]
    assert dense.what == "dense reference (from scratch; always the default budget)"
    assert not dense.cached
    assert dense.steps == 2 * 1376              # 2 epochs x ceil(176,008 pairs / 128)
    assert [(i.sparsity, i.steps, i.cached) for i in plan.items[1:]] == \
        [(s, 8, False) for s in GRID[1:]]       # the tiny budget's steps per point
    text = plan.text()
    assert "dense reference (from scratch; always the default budget) 2752 steps ~" in text
    assert plan.minutes(dense) > 30             # about 0.95 s per step on 2 cores


def test_the_plan_counts_only_the_steps_an_interrupted_run_left(home):
    """A checkpoint of the dense translation run (stopped at step 53): the plan line says
    so and estimates only the 2,699 steps left."""
    import json

    from fitformer.training.runs import Uncached, partial_path, saved_steps
    from fitformer.training.translation import finetune_translation

    fresh = Profile(task="translation", dataset="tatoeba-en-fr", budget="tiny").plan()
    missing = finetune_translation("tatoeba-en-fr", cached_only=True)
    assert isinstance(missing, Uncached) and not missing and missing.saved_steps == 0
    folder = partial_path(missing.key)
    folder.mkdir(parents=True)
    (folder / "checkpoint.json").write_text(json.dumps({"step": 53, "total": 2752}))
    assert saved_steps(missing.key) == 0          # no checkpoint.pt beside it: nothing saved
    (folder / "checkpoint.pt").write_bytes(b"state")
    assert missing.saved_steps == 53
    plan = Profile(task="translation", dataset="tatoeba-en-fr", budget="tiny").plan()
    dense = plan.items[0]
    assert (dense.steps, dense.saved_steps, dense.steps_left) == (2752, 53, 2699)
    assert ("dense reference (from scratch; always the default budget) 2752 steps (53 saved "
            "by an interrupted run) ~") in plan.text()
    assert plan.minutes(dense) == pytest.approx(
        fresh.minutes(fresh.items[0]) - 53 * plan.step_s / 60)
    (folder / "checkpoint.json").write_text("{not json")     # unreadable: counted as none
    assert saved_steps(missing.key) == 0


def test_step_rates_count_only_the_steps_the_last_process_trained(home):
    """A resumed run's train_time_s covers the steps after its checkpoint: the rate divides
    by those; a run resumed with every step saved trained none and sets no rate."""
    import json

    from fitformer.paths import runs_dir
    from fitformer.select.profile import FALLBACK_STEP_S, step_seconds

    def cached(name, **metrics):
        d = runs_dir() / name
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({"task": "classification", **metrics}))

    cached("all-saved", steps=30, resumed_from_step=30, train_time_s=0.004, wall_time_s=31.0)
    assert step_seconds()[0] == FALLBACK_STEP_S               # no rate from it
    cached("resumed", steps=30, resumed_from_step=21, train_time_s=27.0, wall_time_s=57.0)
    per_step, overhead, source = step_seconds()
    assert per_step == pytest.approx(3.0)                     # 27 s over 9 steps, not 30
    assert overhead == pytest.approx(30.0) and source == "the medians of 1 cached run(s)"


def test_a_bad_dataset_fails_before_anything_is_written(home, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n")
    out = tmp_path / "out" / "report"
    with pytest.raises(FitformerError, match="empty.csv"):
        select(dataset=str(empty), budget="tiny", only=["rtx-4090"], out=out,
               log=lambda m: None)
    assert not (tmp_path / "out").exists()


def test_a_query_reads_its_dataset_once(home, monkeypatch):
    import fitformer.data as data_mod

    calls = []
    real = data_mod._load

    def counting(*a, **k):
        calls.append(a[0])
        return real(*a, **k)

    monkeypatch.setattr(data_mod, "_load", counting)
    monkeypatch.setattr(data_mod, "_LOADED", {})
    for _ in range(3):
        data_mod.load_dataset("rotten-tomatoes")
    assert calls == ["rotten-tomatoes"]


def test_the_latency_hint_names_an_lc_at_which_ac_also_holds():
    """A device that misses LC: the hint's LC is that of its fastest point meeting AC, not
    of its fastest point (which may miss AC: following that hint failed again)."""
    from types import SimpleNamespace

    from fitformer.select.loop import Constraints, _nearest_miss

    def point(s, ms, acc):
        est = SimpleNamespace(fits=True, latency_ms=ms, get=lambda k, d=None: d)
        return {"sparsity": s, "estimate": est, "collapsed": None,
                "accuracy": {"dev": {"fx8": acc}, "test": {"fx8": acc}}}

    rows = [("fx8", [point(0.0, 0.95, 0.826), point(0.5, 0.58, 0.797),
                     point(0.95, 0.27, 0.619)])]
    cons = Constraints(latency_ms=0.05).check()
    reason, prec, p, hint = _nearest_miss(rows, cons, 0.797)
    assert reason == "latency" and p["sparsity"] == 0.5
    assert hint.startswith("LC >= 0.58 ms (its fastest point that meets AC")
    # No point meets AC: the fastest point, saying so.
    reason, _, p, hint = _nearest_miss(rows, cons, 0.9)
    assert p["sparsity"] == 0.95 and "none of its points meets AC" in hint


def test_a_bleu_floor_at_or_below_zero_is_refused():
    """A BLEU drop as large as the dense model's BLEU asks for BLEU >= 0 or less, which an
    empty translation meets: refused with the drop that means something."""
    from fitformer.select.loop import Constraints, _check_above_majority

    cons = Constraints(3.0, 1, 16, None, 2.0, 16, "bleu").check()
    _check_above_majority(cons.target(34.26), None, cons, 34.26)       # 32.26: fine
    with pytest.raises(FitformerError) as e:
        _check_above_majority(cons.target(1.5), None, cons, 1.5)
    assert str(e.value) == (
        "AC: --max-bleu-drop 2 below the dense model's dev BLEU 1.50 asks for dev BLEU >= "
        "-0.50, which any output meets (BLEU is at least 0); give --max-bleu-drop below "
        "1.50.")
    with pytest.raises(FitformerError, match="the dense model translates nothing"):
        _check_above_majority(cons.target(0.0), None, cons, 0.0)
    # (The default drop, not the user's, is noted instead: tests/test_translation.py.)
