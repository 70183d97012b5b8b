"""`--metric accuracy|macro_f1` (issue 18): macro-F1 by hand, its majority-class baseline in
the one majority-class rule, macro-F1 filled into cached runs that lack it, and select /
profile deciding and reporting on the chosen metric."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from fitformer.cli import app
from fitformer.errors import FitformerError
from fitformer.select import select
from fitformer.select.profile import ProfilePoint
from fitformer.training.evaluation import collapse_reason, macro_f1, majority_baseline

runner = CliRunner()


def test_macro_f1_by_hand():
    # class 0: TP 2, FN 1 -> F1 4/5; class 1: TP 1, FP 1 -> F1 2/3.
    assert macro_f1([0, 0, 0, 1], [0, 0, 1, 1]) == pytest.approx((4 / 5 + 2 / 3) / 2)
    # Classes 1 and 2 never predicted: F1 0 each (no division error).
    assert macro_f1([0, 1, 2], [0, 0, 0]) == pytest.approx((2 / 4) / 3)
    # A class only predicted counts, with F1 0 (scikit-learn's label set).
    assert macro_f1([0, 0], [0, 1]) == pytest.approx((2 / 3) / 2)
    assert macro_f1([3, 1], [3, 1]) == 1.0
    with pytest.raises(ValueError, match="2 labels but 1"):
        macro_f1([0, 1], [0])


def test_majority_baseline_per_metric():
    labels = [1, 1, 1, 0]
    assert majority_baseline(labels, "accuracy") == 0.75
    # Always 1: its F1 2 * 0.75 / 1.75, class 0 scores 0.
    assert majority_baseline(labels, "macro_f1") == pytest.approx(2 * 0.75 / 1.75 / 2)
    assert majority_baseline([0, 1, 2, 2], "macro_f1") == pytest.approx(2 * 0.5 / 1.5 / 3)
    with pytest.raises(ValueError, match="unknown metric"):
        majority_baseline(labels, "auc")


def test_the_majority_rule_in_macro_f1():
    base = majority_baseline([1, 1, 1, 0], "macro_f1")
    reason = collapse_reason(base, base, 2, "macro_f1")
    assert "dev macro-F1 0.4286 is at or below the majority-class baseline 0.4286" in reason
    assert collapse_reason(base + 0.01, base, 2, "macro_f1") is None
    # The accuracy wording is unchanged.
    assert collapse_reason(0.6, 0.6, 2) == ("dev accuracy 0.6000 is at or below the "
                                            "majority-class rate 0.6000")
    # A point judged on macro-F1: an accuracy above the majority rate does not save it.
    metrics = {"task": "classification", "accuracy": {"dev": {"fp32": 0.80}},
               "macro_f1": {"dev": {"fp32": 0.44}, "test": {"fp32": 0.44}},
               "majority_rate": {"dev": 0.78}, "majority_macro_f1": {"dev": 0.4382},
               "predicted_classes": {"dev": {"fp32": 2}}, "sparsity": {"overall": 0.9},
               "hp_split": None}
    p = ProfilePoint.from_metrics(0.9, metrics, metrics["macro_f1"], "r", "macro_f1")
    assert p.collapsed["fp32"] is None and p.majority_baseline == 0.4382
    metrics["macro_f1"]["dev"]["fp32"] = 0.4382
    p = ProfilePoint.from_metrics(0.9, metrics, metrics["macro_f1"], "r", "macro_f1")
    assert "majority-class baseline 0.4382" in p.collapsed["fp32"]
    assert p.majority_rate == 0.78 and p.as_dict()["majority_baseline_dev"] == 0.4382


def _stripped_copy(run_dir, dest, drop):
    """A copy of a run folder whose metrics.json lacks the keys in ``drop``."""
    shutil.copytree(run_dir, dest)
    m = json.loads((dest / "metrics.json").read_text())
    for k in drop:
        m.pop(k, None)
    (dest / "metrics.json").write_text(json.dumps(m))
    return m


def test_a_run_records_macro_f1_and_a_cached_run_without_it_gets_it(in_tiny_home, tmp_path):
    """New runs store macro-F1, its baseline and per-example predictions; a run without
    them gets them, from its per-example correctness (two classes) or by evaluating it
    again, with the same values."""
    from fitformer.data import load_dataset
    from fitformer.training.budgets import get_budget
    from fitformer.training.finetune import complete_macro_f1

    _, dense = in_tiny_home
    m = dense.metrics
    data = load_dataset("rotten-tomatoes")
    labels = list(data.dev.subset(get_budget("tiny").dev_examples).labels)
    pred = [int(x) for x in m["per_example_prediction"]["dev"]["fp32"].split(",")]
    assert len(pred) == len(labels) == 160
    assert m["macro_f1"]["dev"]["fp32"] == pytest.approx(macro_f1(labels, pred))
    assert m["majority_macro_f1"]["dev"] == pytest.approx(majority_baseline(labels,
                                                                            "macro_f1"))
    acc = sum(p == y for p, y in zip(pred, labels, strict=True)) / len(labels)
    assert acc == pytest.approx(m["accuracy"]["dev"]["fp32"])
    # Derived from per_example_correct (two classes): no model is loaded.
    old = _stripped_copy(dense.path, tmp_path / "derived",
                         ("macro_f1", "majority_macro_f1", "per_example_prediction"))
    got = complete_macro_f1(tmp_path / "derived", old, data)
    on_disk = json.loads((tmp_path / "derived" / "metrics.json").read_text())
    for s in ("dev", "test"):
        assert got["macro_f1"][s] == pytest.approx(m["macro_f1"][s])
        assert on_disk["macro_f1"][s] == pytest.approx(m["macro_f1"][s])
    assert on_disk["majority_macro_f1"] == pytest.approx(m["majority_macro_f1"])
    # Nothing per example stored: evaluated again (fp32 only, to keep the test short).
    old = _stripped_copy(dense.path, tmp_path / "again",
                         ("macro_f1", "majority_macro_f1", "per_example_prediction",
                          "per_example_correct"))
    for s in ("dev", "test"):
        old["accuracy"][s] = {"fp32": old["accuracy"][s]["fp32"]}
    got = complete_macro_f1(tmp_path / "again", old, data)
    for s in ("dev", "test"):
        assert got["macro_f1"][s]["fp32"] == pytest.approx(m["macro_f1"][s]["fp32"],
                                                           abs=1e-9)
    assert got["per_example_prediction"]["dev"]["fp32"] == m["per_example_prediction"][
        "dev"]["fp32"]


def test_select_decides_and_reports_on_macro_f1(in_tiny_home, tmp_path):
    """A dense run without macro-F1 in its metrics.json: select fills it in, takes AC on
    it, and report.json, report.html and the CLI table name the metric."""
    _, dense = in_tiny_home
    m = dense.metrics
    copy = tmp_path / "dense"
    _stripped_copy(dense.path, copy, ("macro_f1", "majority_macro_f1",
                                      "per_example_prediction"))
    out = tmp_path / "r"
    res = runner.invoke(app, ["select", "--dense", str(copy), "--budget", "tiny", "--only",
                              "rtx-4090", "--latency-ms", "500", "--metric", "macro_f1",
                              "--out", str(out)])
    assert res.exit_code in (0, 3), res.output
    rep = json.loads((out / "report.json").read_text())
    f1 = m["macro_f1"]["dev"]["fp32"]
    assert rep["metric"] == {"name": "macro_f1", "scale_max": 1.0, "label": "macro-F1"}
    assert rep["dense_accuracy"]["dev"] == pytest.approx(f1)
    assert rep["majority_baseline_dev"] == pytest.approx(m["majority_macro_f1"]["dev"])
    assert rep["majority_rate_dev"] == pytest.approx(m["majority_rate"]["dev"])
    assert json.loads((copy / "metrics.json").read_text())["macro_f1"]["dev"]["fp32"] == \
        pytest.approx(f1)
    # The default AC (a 0.05 drop), raised to the majority baseline if it falls below.
    base = m["majority_macro_f1"]["dev"]
    assert rep["target_accuracy_dev"] == pytest.approx(max(f1 - 0.05, base))
    assert (rep["target_note"] is not None) == (f1 - 0.05 <= base)
    gpu = rep["devices"][0]
    assert gpu["accuracy_dev"] == pytest.approx(f1)
    assert gpu["feasible"] == (f1 >= rep["target_accuracy_dev"] and res.exit_code == 0)
    table = " ".join(res.output.replace("│", " ").split())
    assert "dev macro-F1" in table and "AC dev macro-F1 >=" in table, res.output
    assert "dev macro-F1" in (out / "report.html").read_text()


def test_a_macro_f1_floor_at_the_majority_baseline_is_refused(in_tiny_home, tmp_path):
    _, dense = in_tiny_home
    base = dense.metrics["majority_macro_f1"]["dev"]
    with pytest.raises(FitformerError, match="majority-class baseline") as e:
        select(dense_dir=dense.path, budget="tiny", only=["rtx-4090"], metric="macro_f1",
               min_accuracy=base, out=tmp_path / "never", log=lambda m: None)
    assert "dev macro-F1" in str(e.value) and f"{base:.4f}" in str(e.value)
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("args,needle", [
    (["select", "--task", "translation", "--metric", "macro_f1"], "--metric macro_f1 is for"),
    (["profile", "--task", "translation", "--metric", "accuracy"], "--metric accuracy is for"),
    (["select", "--metric", "auc"], "auc"),
])
def test_metric_misuse_is_refused_before_any_work(empty_home, args, needle):
    res = runner.invoke(app, args)
    assert res.exit_code != 0
    msg = str(res.exception) + res.output
    assert needle in msg and "fetch" not in msg
