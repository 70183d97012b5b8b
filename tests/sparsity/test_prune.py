"""A small real prune-and-fine-tune run (tiny budget: 320 real sentences, 8 steps)."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from fitformer.errors import FitformerError
from fitformer.models import load_classifier, resolve_model
from fitformer.sparsity.prune import PruneSpec, prune


@pytest.fixture
def hp_08(tiny_hp_run):
    return tiny_hp_run


def expected_hp_sparsity(sparsity, shapes):
    """Hand rule of design.md §3 at r = c = 16, B = 4, default d2 = 0.5."""
    d2 = 0.5
    kept = total = 0
    for M, N in shapes:
        K1 = math.floor((1 - sparsity) / d2 * (M // 16) + 1e-9)
        kept += K1 * 16 / M * d2 * M * N
        total += M * N
    return 1 - kept / total


def test_prune_run_achieves_the_hp_rule_and_records_accuracy(hp_08):
    dense, run = hp_08
    m = run.metrics
    path = run.path
    shapes = [(384, 384)] * 24 + [(1536, 384)] * 6 + [(384, 1536)] * 6
    assert m["sparsity"]["overall"] == pytest.approx(expected_hp_sparsity(0.8, shapes))
    assert m["hp_split"] == pytest.approx({"d1": 0.4, "d2": 0.5})
    pruning = json.loads((path / "pruning.json").read_text())
    q0 = pruning["layers"]["bert.encoder.layer.0.attention.self.query"]
    assert (q0["K1"], q0["k"], q0["d1"], q0["d2"]) == (9, 2, 9 / 24, 0.5)
    ffn_in = pruning["layers"]["bert.encoder.layer.0.intermediate.dense"]
    assert (ffn_in["K1"], ffn_in["k"]) == (38, 2)
    # The run folder loads like any model; pruned weights are exactly zero.
    net = load_classifier(resolve_model(str(path)))
    masks = load_file(str(path / "masks.safetensors"))
    assert len(masks) == 36 and all(v.dtype == torch.bool for v in masks.values())
    for name, mask in masks.items():
        w = net.get_submodule(name).weight
        assert (w[~mask] == 0).all()
    acc = m["accuracy"]
    for split in ("dev", "test"):
        assert set(acc[split]) == {"fp32", "fx16", "fx8"}
        assert all(0.0 <= a <= 1.0 for a in acc[split].values())
    assert abs(acc["dev"]["fx16"] - acc["dev"]["fp32"]) <= 0.02
    assert m["budget"] == "tiny" and m["smoke"] is True


def test_chaining_only_shrinks_and_rejects_other_patterns(hp_08):
    dense, run = hp_08
    nxt = prune(spec=PruneSpec("hp", 0.9), from_dir=run.path, budget="tiny")
    a = load_file(str(run.path / "masks.safetensors"))
    b = load_file(str(nxt.path / "masks.safetensors"))
    assert all(not (b[n] & ~a[n]).any() for n in a)
    assert nxt.metrics["sparsity"]["overall"] > run.metrics["sparsity"]["overall"]
    with pytest.raises(FitformerError, match="chain only the same pattern"):
        prune(spec=PruneSpec("unstructured", 0.9), from_dir=run.path, budget="tiny")
    with pytest.raises(FitformerError, match="masks only shrink"):
        prune(spec=PruneSpec("hp", 0.5), from_dir=run.path, budget="tiny")
    again = prune(spec=PruneSpec("hp", 0.8), from_dir=dense.path, budget="tiny")
    assert again.cached and again.path == run.path
