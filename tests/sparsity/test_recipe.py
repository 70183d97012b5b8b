"""The pruning recipe (issue 16): distillation, the majority-class rule shared by the
collapse guard and select, the run key's recipe version, the paired bootstrap."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fitformer.errors import FitformerError
from fitformer.experiments.recipe import paired_bootstrap
from fitformer.select.profile import ProfilePoint
from fitformer.training.evaluation import collapse_reason, majority_rate
from fitformer.training.loop import DistillConfig, distillation_loss


def test_majority_rule_by_hand():
    assert majority_rate([1, 1, 0, 1]) == 0.75
    assert collapse_reason(0.9, 0.6, 1) == "every dev prediction is one class"
    assert "at or below the majority-class rate 0.6000" in collapse_reason(0.6, 0.6, 2)
    assert collapse_reason(0.61, 0.6, 2) is None
    assert collapse_reason(None, None, None) is None


def test_collapsed_point_is_marked_for_select():
    metrics = {"task": "classification", "accuracy": {"dev": {"fp32": 0.578, "fx16": 0.8}},
               "majority_rate": {"dev": 0.578},
               "predicted_classes": {"dev": {"fp32": 1, "fx16": 2}},
               "sparsity": {"overall": 0.8}, "hp_split": None}
    p = ProfilePoint.from_metrics(0.8, metrics, metrics["accuracy"], Path("x"))
    assert p.collapsed["fp32"] == "every dev prediction is one class"
    assert p.collapsed["fx16"] is None and p.majority_rate == 0.578


def test_select_never_chooses_a_collapsed_point():
    from fitformer.hardware.catalog import load_catalog
    from fitformer.hardware.report import LatencyReport
    from fitformer.select.loop import Constraints, _decide

    dev = load_catalog(only=["u200"], include_host=False)[0]
    fast = LatencyReport("u200", "model", 1, 128, 0.5, 0.4, 0.1, "fx8", True)
    acc = {"dev": {"fx8": 0.9}, "test": {"fx8": 0.9}}
    rows = [("fx8", [{"sparsity": 0.9, "estimate": fast, "accuracy": acc,
                      "collapsed": "every dev prediction is one class"}])]
    cons = Constraints(latency_ms=1.0, batch_size=1, seq_len=128)
    row = _decide(dev, rows, cons, 0.5, True, "price_usd")
    assert row["feasible"] is False
    assert row["curve"]["fx8"][0]["collapsed"] == "every dev prediction is one class"


def test_distillation_loss_by_hand():
    class Out:
        def __init__(self, logits):
            self.logits = logits

    s, t = torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 0.0]])
    loss, parts = distillation_loss(Out(s), Out(t), torch.tensor([0]), None,
                                    DistillConfig("logits", 2.0, 0.5))
    # Equal logits: KL 0, CE ln 2; loss = 0.5 ln 2.
    assert parts["kl"] == pytest.approx(0.0, abs=1e-7)
    assert float(loss) == pytest.approx(0.5 * np.log(2))
    with pytest.raises(FitformerError, match="--distill-alpha"):
        DistillConfig("logits", 2.0, 1.5)
    with pytest.raises(FitformerError, match="choose from none, logits, layers"):
        DistillConfig("feature")


def test_paired_bootstrap_by_hand():
    a = np.array([1, 1, 1, 0] * 50, dtype=bool)
    diff, lo, hi = paired_bootstrap(a, a)
    assert (diff, lo, hi) == (0.0, 0.0, 0.0)
    b = np.array([1, 0, 1, 0] * 50, dtype=bool)
    diff, lo, hi = paired_bootstrap(a, b)
    assert diff == pytest.approx(0.25) and lo < 0.25 < hi


@pytest.mark.parametrize("lr", [0.0, -1e-4, float("nan"), 2.0])
def test_prune_refuses_a_bad_learning_rate(lr):
    from fitformer.sparsity.prune import prune

    with pytest.raises(FitformerError, match="--lr"):
        prune(budget="tiny", learning_rate=lr)


@pytest.mark.slow
def test_distillation_lowers_kl_to_the_teacher(in_tiny_home):
    """Tiny budget, HP 0.5 from the tiny dense run, 16 steps each: with the KL as the whole
    loss (alpha 1) the student ends closer to the teacher on the dev split."""
    import torch.nn.functional as F

    from fitformer.data import load_dataset
    from fitformer.models.loading import load_classifier, load_tokenizer, resolve_model
    from fitformer.sparsity.prune import PruneSpec, prune
    from fitformer.training.budgets import get_budget
    from fitformer.training.finetune import encode_splits

    _, dense = in_tiny_home
    plain = prune(spec=PruneSpec("hp", 0.5), from_dir=dense.path, budget="tiny",
                  epochs_per_point=2)
    kd = prune(spec=PruneSpec("hp", 0.5), from_dir=dense.path, budget="tiny",
               epochs_per_point=2, distill=DistillConfig("logits", 2.0, 1.0))
    assert kd.key["distill"]["teacher"] == dense.path.name and "distill" not in plain.key
    assert kd.key["recipe_version"] == plain.key["recipe_version"]
    assert "fitformer_version" not in kd.key
    assert json.loads((kd.path / "run.json").read_text())["fitformer_version"]
    schedule = json.loads((kd.path / "pruning.json").read_text())["schedule"]
    assert schedule["steps"] == 16 and schedule["pruning_steps"] + \
        schedule["recovery_steps"] == 16
    assert schedule["learning_rate"] == plain.key["recipe"]["learning_rate"] == 5e-5
    data = load_dataset("rotten-tomatoes")
    ref = resolve_model(str(dense.path))
    _, devset, _ = encode_splits(load_tokenizer(ref), data, get_budget("tiny"), 64)
    batch = devset.batch(list(range(len(devset))))
    batch.pop("labels")
    teacher = load_classifier(ref).eval()

    def kl(run):
        net = load_classifier(resolve_model(str(run.path))).eval()
        with torch.no_grad():
            t, s = teacher(**batch).logits, net(**batch).logits
        return float(F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1),
                              reduction="batchmean", log_target=True))

    assert kl(kd) < kl(plain)
    for run in (plain, kd):    # the majority-class fields are recorded
        m = run.metrics
        assert 0.5 <= m["majority_rate"]["dev"] < 1 and "fp32" in m["collapsed"]
        assert len(m["per_example_correct"]["dev"]["fp32"]) == m["split_sizes"]["dev"]


def test_recipe_verdict_by_hand():
    from fitformer.experiments.recipe import verdict

    def row(series, pattern, s, dev, diff):
        return {"series": series, "pattern": pattern, "split": "global",
                "requested_sparsity": s, "dev": {"fp32": dev}, "dev_diff_to_dense": diff,
                "dev_diff_ci95": [diff - 0.02, diff + 0.02]}

    lines = "\n".join(verdict([row("a", "hp", 0.8, 0.80, -0.047), row("b", "hp", 0.8, 0.83, -0.017),
                               row("b", "unstructured", 0.8, 0.86, 0.013),
                               row("a", "hp", 0.9, 0.79, -0.057)]))
    assert "HP 0.8 vs dense: best dev 0.8300 (b), -0.0170 [-0.0370, +0.0030]; target within " \
           "0.02: met." in lines
    assert "HP 0.9 vs dense: best dev 0.7900 (a), -0.0570" in lines and "0.05: not met." in lines
    assert "HP vs unstructured, b, 0.8: 0.8300 vs 0.8600 (-0.0300); target within 0.02: " \
           "not met." in lines
    assert "HP vs unstructured, a" not in lines              # no unstructured run in a
    # A series that shares b's recipe with other blocks is compared with b's unstructured.
    finer = {**row("b, 1x16 blocks", "hp", 0.8, 0.85, 0.003), "recipe": "b"}
    lines = "\n".join(verdict([finer, row("b", "unstructured", 0.8, 0.86, 0.013)]))
    assert "HP vs unstructured, b, 1x16 blocks, 0.8: 0.8500 vs 0.8600 (-0.0100); target " \
           "within 0.02: met." in lines


def test_distillation_loss_skips_unlabelled_sentences_in_the_task_term():
    class Out:
        def __init__(self, logits):
            self.logits = logits

    s = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    cfg = DistillConfig("logits", 1.0, 0.5, augment=1)
    loss, parts = distillation_loss(Out(s), Out(s.clone()), torch.tensor([1, -100]), None, cfg)
    # Only sentence 0 is labelled: CE = ln(1 + e^2) - 0 = log-sum-exp minus logit 0.
    assert parts["ce"] == pytest.approx(float(np.log1p(np.exp(2.0))))
    assert parts["kl"] == pytest.approx(0.0, abs=1e-7)
    loss, parts = distillation_loss(Out(s), Out(s.clone()), torch.tensor([-100, -100]), None,
                                    cfg)
    assert parts["ce"] == 0.0 and float(loss) == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(FitformerError, match="--distill-augment"):
        DistillConfig("none", augment=2)
    with pytest.raises(FitformerError, match="--distill-augment"):
        DistillConfig("logits", augment=-1)
    assert "augment" not in DistillConfig("logits").as_key()
    assert DistillConfig("logits", augment=3).as_key()["augment_rules"]["p_ngram"] == 0.25


@pytest.mark.slow
def test_augmented_distillation_trains_on_the_copies(in_tiny_home):
    """Tiny budget, HP 0.5 with 2 copies per sentence: the schedule counts the copies, the
    key records them, and the run differs from the one without copies."""
    from fitformer.sparsity.prune import PruneSpec, prune

    _, dense = in_tiny_home
    kw = dict(spec=PruneSpec("hp", 0.5), from_dir=dense.path, budget="tiny")
    plain = prune(**kw, distill=DistillConfig("logits", 2.0, 0.9))
    aug = prune(**kw, distill=DistillConfig("logits", 2.0, 0.9, augment=2))
    assert aug.key["distill"]["augment"] == 2 and "augment" not in plain.key["distill"]
    assert aug.path != plain.path
    schedule = json.loads((aug.path / "pruning.json").read_text())["schedule"]
    n = json.loads((plain.path / "pruning.json").read_text())["schedule"]["train_sentences"]
    assert schedule["train_sentences"] == 3 * n
    assert schedule["augmented_sentences"] == 2 * n
    assert (aug.path / "model.safetensors").read_bytes() != \
        (plain.path / "model.safetensors").read_bytes()


def test_earlier_rows_are_kept_by_series_pattern_and_sparsity(tmp_path):
    from fitformer.experiments.recipe import _earlier_rows

    assert _earlier_rows(tmp_path / "none.json") == {}
    f = tmp_path / "pruning-recipe.json"
    f.write_text(json.dumps({"dense": {"run_dir": "d0"}, "rows": [
        {"series": "s", "pattern": "hp", "requested_sparsity": 0.8, "dev": {"fp32": 0.8}}]}))
    got = _earlier_rows(f)
    assert list(got) == [("s", "hp", 0.8)] and got[("s", "hp", 0.8)]["dense_run_dir"] == "d0"
    f.write_text("{not json")
    with pytest.raises(FitformerError, match="git checkout -- docs/pruning-recipe.json"):
        _earlier_rows(f)
