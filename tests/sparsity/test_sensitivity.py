"""Per-layer HP split by sensitivity (issue 16, item 4): the split grid, the one-shot scan
on the real fine-tuned model, and real tiny-budget per-layer runs (chained too)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import load_file

from fitformer.errors import FitformerError
from fitformer.models import load_classifier, resolve_model
from fitformer.models.layers import LinearInfo
from fitformer.sparsity.patterns import Hierarchical
from fitformer.sparsity.prune import PruneSpec, _final_levels, prune, prune_key
from fitformer.sparsity.sensitivity import (
    measure_sensitivity,
    sentence_indices,
    split_candidates,
)
from fitformer.training.loop import TrainConfig

Q0 = "bert.encoder.layer.0.attention.self.query"
FFN_IN_0 = "bert.encoder.layer.0.intermediate.dense"
FFN_OUT_5 = "bert.encoder.layer.5.output.dense"


def flat(pairs):
    return [x for pair in pairs for x in pair]


def test_split_grid_by_hand():
    hp = Hierarchical()  # r = c = 16, B = 4: d2 in {0.25, 0.5, 0.75, 1}
    got = split_candidates(hp, (384, 384), 0.8)
    assert flat(got) == pytest.approx(flat(((0.8, 0.25), (0.4, 0.5), (0.2 / 0.75, 0.75),
                                             (0.2, 1.0))))
    # K1 = floor(d1 * 24): 19.2, 9.6, 6.4, 4.8 blocks per stripe; k = d2 * 4 per bank.
    assert [hp.counts((384, 384), s) for s in got] == [
        {"K1": 19, "k": 1}, {"K1": 9, "k": 2}, {"K1": 6, "k": 3}, {"K1": 4, "k": 4}]
    # d = 0.6: d2 = 0.25 cannot reach it (d1 would be 2.4).
    assert flat(split_candidates(hp, (384, 384), 0.4)) == pytest.approx(
        flat(((0.8, 0.75), (0.6, 1.0))))
    # Chained from (0.4, 0.5): d1 and d2 may not grow.
    assert flat(split_candidates(hp, (384, 384), 0.9, ceiling=(0.4, 0.5))) == pytest.approx(
        flat(((0.4, 0.25), (0.2, 0.5))))
    # 32 rows, r = 16: at d = 0.05 every split rounds K1 to 0 -> refused with the fix.
    with pytest.raises(FitformerError, match="smaller --block"):
        split_candidates(hp, (32, 64), 0.95)


@given(mb=st.integers(1, 12), nb=st.integers(1, 6), sparsity=st.floats(0.3, 0.97),
       r=st.sampled_from([8, 16]), c_b=st.sampled_from([(16, 4), (16, 2), (8, 4)]),
       seed=st.integers(0, 2**16))
def test_every_candidate_is_never_below_the_request_and_within_one_step(
        mb, nb, sparsity, r, c_b, seed):
    c, banks = c_b
    hp = Hierarchical(r, c, banks=banks)
    shape = (mb * r, nb * c)
    d = 1.0 - sparsity
    try:
        cands = split_candidates(hp, shape, sparsity)
    except FitformerError:
        # Only when every split rounds a level to nothing.
        assert all(min(hp.counts(shape, s).values()) == 0 for s in hp.splits(sparsity))
        return
    w = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    for d1, d2 in cands:
        assert d1 * d2 == pytest.approx(d) and d1 <= 1.0
        assert any(abs(d2 - g) < 1e-9 for g in hp.level2_grid)
        achieved = 1.0 - int(hp.mask_from_levels(w, (d1, d2)).sum()) / w.numel()
        step = hp.density_step(shape, (d1, d2))
        assert sparsity - 1e-9 <= achieved < sparsity + step + 1e-9


@given(s0=st.floats(0.3, 0.9), extra=st.floats(0.0, 0.09), pick=st.integers(0, 3),
       rows=st.sampled_from([384, 1536]))
def test_chained_candidates_never_grow_a_level_and_keep_the_source_d2(s0, extra, pick, rows):
    hp = Hierarchical()
    src = split_candidates(hp, (rows, 384), s0)
    ceiling = src[pick % len(src)]
    s = s0 + extra
    try:
        got = split_candidates(hp, (rows, 384), s, ceiling=ceiling)
    except FitformerError:  # only when each split within the ceiling empties the layer
        got = ()
    assert all(d1 <= ceiling[0] + 1e-9 and d2 <= ceiling[1] + 1e-9 for d1, d2 in got)
    # Exactly the unrestricted splits within the ceiling; the source's d2 among them
    # unless d1 = d / d2_src rounds to no block per stripe.
    within = [c for c in hp.splits(s) if c[0] <= ceiling[0] + 1e-9
              and c[1] <= ceiling[1] + 1e-9 and hp.counts((rows, 384), c)["K1"] > 0]
    assert flat(got) == pytest.approx(flat(within))
    same_d2 = ((1 - s) / ceiling[1], ceiling[1])
    assert any(abs(d2 - ceiling[1]) < 1e-9 for _, d2 in got) == (
        hp.counts((rows, 384), same_d2)["K1"] > 0)


def test_sentences_are_a_fixed_seeded_draw():
    a = sentence_indices(320, 256, seed=0)
    assert a == sentence_indices(320, 256, seed=0) and len(set(a)) == 256
    assert a != sentence_indices(320, 256, seed=1)
    assert sorted(sentence_indices(10, 256, seed=0)) == list(range(10))


def test_global_keys_unchanged_and_per_layer_checked():
    data = SimpleNamespace(task="classification", name="rotten-tomatoes", data_split="s")
    src = {"model": "m"}
    cfg = TrainConfig(batch_size=32, learning_rate=5e-5, max_length=64, max_steps=8)
    spec = PruneSpec("hp", 0.8)
    key = prune_key(src, SimpleNamespace(name="d", parent=SimpleNamespace(name="runs")),
                    data, spec, spec.make_pattern(), "tiny", cfg)
    assert key["hp_split"] == pytest.approx({"d1": 0.4, "d2": 0.5})
    assert "split_scan" not in key
    per = PruneSpec("hp", 0.8, split_mode="per-layer")
    pkey = prune_key(src, SimpleNamespace(name="d", parent=SimpleNamespace(name="runs")),
                     data, per, per.make_pattern(), "tiny", cfg)
    assert pkey["hp_split"] == "per_layer"
    assert pkey["split_scan"] == {"sentences": 256, "measure": "one-shot loss increase"}
    assert {k: v for k, v in pkey.items() if k not in ("hp_split", "split_scan")} == \
        {k: v for k, v in key.items() if k != "hp_split"}
    with pytest.raises(FitformerError, match="--pattern hp"):
        PruneSpec("unstructured", 0.8, split_mode="per-layer").make_pattern()
    with pytest.raises(FitformerError, match="drop it"):
        PruneSpec("hp", 0.8, level2_density=0.5, split_mode="per-layer").make_pattern()
    with pytest.raises(FitformerError, match="global or per-layer"):
        PruneSpec("hp", 0.8, split_mode="perlayer").make_pattern()


def test_global_chain_refuses_to_grow_a_per_layer_source_level():
    """A per-layer source may have chosen d2 = 0.25 for a layer; the global split at 0.9
    (d2 = 0.5) would grow its level 2, so the chain is refused with the fix."""
    spec = PruneSpec("hp", 0.9)
    info = LinearInfo(Q0, "q", 0, 384, 384, True)
    levels, scan = _final_levels(None, None, [info], spec.make_pattern(), spec, 0, None,
                                 {Q0: (0.4, 0.5)})
    assert levels[Q0] == pytest.approx((0.2, 0.5)) and scan is None
    with pytest.raises(FitformerError, match="--hp-split per-layer"):
        _final_levels(None, None, [info], spec.make_pattern(), spec, 0, None,
                      {Q0: (0.8, 0.25)})
    # A resumed per-layer build takes the splits of its interrupted scan, checked the same.
    per = PruneSpec("hp", 0.9, split_mode="per-layer")
    scan = {"layers": {Q0: {"chosen": {"d1": 0.4, "d2": 0.25}}}}
    levels, again = _final_levels(None, None, [info], per.make_pattern(), per, 0, None,
                                  {Q0: (0.8, 0.25)}, resumed=scan)
    assert levels == {Q0: (0.4, 0.25)} and again is scan
    grown = {"layers": {Q0: {"chosen": {"d1": 0.1 / 0.75, "d2": 0.75}}}}
    with pytest.raises(FitformerError, match="masks only shrink"):
        _final_levels(None, None, [info], per.make_pattern(), per, 0, None,
                      {Q0: (0.4, 0.5)}, resumed=grown)


@pytest.fixture
def tiny_model_and_train(in_tiny_home):
    from fitformer.data import load_dataset
    from fitformer.models.loading import load_tokenizer
    from fitformer.training.budgets import get_budget
    from fitformer.training.finetune import encode_splits

    _, dense = in_tiny_home
    ref = resolve_model(str(dense.path))
    net = load_classifier(ref)
    train, _, _ = encode_splits(load_tokenizer(ref), load_dataset("rotten-tomatoes"),
                                get_budget("tiny"), 64)
    return net, train


def test_sensitivity_is_exact_at_full_density_and_grows_with_level1_sparsity(
        tiny_model_and_train):
    net, train = tiny_model_and_train
    hp = Hierarchical()
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    # Same d2 = 0.5; level 1 keeps 80% then 20% of the blocks (sparsity 0.6 then 0.9).
    cands = {FFN_IN_0: [(1.0, 1.0), (0.8, 0.5), (0.2, 0.5)], FFN_OUT_5: [(0.2, 0.5)]}
    table = measure_sensitivity(net, train, hp, 0.9, cands, sentences=32, seed=0)
    print({n: [(s.levels, round(s.loss_increase, 4)) for s in v]
           for n, v in table.scores.items()}, table.base_loss)
    full, gentle, harsh = table.scores[FFN_IN_0]
    assert full.loss_increase == 0.0 and full.achieved_sparsity == 0.0  # replay is exact
    # ffn_in is 1536 x 384: 96 blocks per stripe, K1 = floor(0.8 * 96) = 76, floor(19.2).
    assert gentle.achieved_sparsity == pytest.approx(1 - 76 / 96 * 0.5)
    assert harsh.achieved_sparsity == pytest.approx(1 - 19 / 96 * 0.5)
    assert harsh.loss_increase > gentle.loss_increase
    assert harsh.loss_increase > 0.01  # nats: 90% of a whole FFN matrix, one shot
    assert 0.0 < table.base_loss < math.log(2)  # fine-tuned: better than chance
    # The scan leaves the model as it found it.
    assert all(torch.equal(p, before[n]) for n, p in net.named_parameters())
    # Replaying layers 0-4 for a layer-5 matrix gives the loss of a full forward pass.
    w = net.get_submodule(FFN_OUT_5).weight
    with torch.no_grad():
        w.mul_(hp.mask_from_levels(w, (0.2, 0.5)))
        plain = measure_sensitivity(net, train, hp, 0.9, {}, sentences=32, seed=0)
    assert plain.base_loss == pytest.approx(table.scores[FFN_OUT_5][0].loss, abs=1e-5)


@pytest.fixture
def per_layer_runs(in_tiny_home):
    """(dense, per-layer HP 0.8 from dense, per-layer HP 0.9 chained from it); tiny budget,
    8 sentences in the scan."""
    _, dense = in_tiny_home
    a = prune(spec=PruneSpec("hp", 0.8, split_mode="per-layer", sensitivity_sentences=8),
              from_dir=dense.path, budget="tiny")
    b = prune(spec=PruneSpec("hp", 0.9, split_mode="per-layer", sensitivity_sentences=8),
              from_dir=a.path, budget="tiny")
    return dense, a, b


def _pruning(run):
    return json.loads((run.path / "pruning.json").read_text())


def test_per_layer_runs_record_splits_and_never_grow_a_level(per_layer_runs):
    hp = Hierarchical()
    dense, a, b = per_layer_runs
    pa, pb = _pruning(a), _pruning(b)
    assert a.metrics["hp_split"] == pa["hp_split"] == a.key["hp_split"] == "per_layer"
    assert a.key["split_scan"]["sentences"] == 8
    chosen_d2 = {}
    for run, p, s in ((a, pa, 0.8), (b, pb, 0.9)):
        scan = p["sensitivity"]
        assert scan["sentences"] == 8 and scan["requested_sparsity"] == s
        assert len(p["layers"]) == len(scan["layers"]) == 36
        for name, layer in p["layers"].items():
            d1, d2 = layer["levels"]
            shape = tuple(layer["shape"])
            assert d1 * d2 == pytest.approx(1 - s)
            assert s - 1e-9 <= layer["achieved_sparsity"] < s + hp.density_step(
                shape, (d1, d2)) + 1e-9
            cands = scan["layers"][name]["candidates"]
            best = min(cands, key=lambda c: c["loss_increase"])
            assert (best["d1"], best["d2"]) == pytest.approx((d1, d2))
            assert scan["layers"][name]["chosen"] == pytest.approx({"d1": d1, "d2": d2})
            assert (layer["K1"], layer["k"]) == (best["K1"], best["k"])
            if run is a:
                assert len(cands) == 4  # d2 = 0.25, 0.5, 0.75, 1 at d = 0.2
                chosen_d2[name] = d2
    # Chained: every layer's levels and counts at most its source's; masks only shrink.
    ma, mb = load_file(str(a.path / "masks.safetensors")), load_file(str(b.path /
                                                                        "masks.safetensors"))
    for name, layer in pb["layers"].items():
        src = pa["layers"][name]
        assert all(x <= y + 1e-9 for x, y in zip(layer["levels"], src["levels"], strict=True))
        assert layer["K1"] <= src["K1"] and layer["k"] <= src["k"]
        for c in pb["sensitivity"]["layers"][name]["candidates"]:
            assert c["d1"] <= src["levels"][0] + 1e-9 and c["d2"] <= src["levels"][1] + 1e-9
        assert not (mb[name] & ~ma[name]).any()
    print("per-layer d2 at 0.8:", {n.replace("bert.encoder.", ""): d
                                   for n, d in chosen_d2.items()})
    # Cached by its key.
    again = prune(spec=PruneSpec("hp", 0.8, split_mode="per-layer", sensitivity_sentences=8),
                  from_dir=dense.path, budget="tiny", cached_only=True)
    assert again and again.path == a.path


def test_a_per_layer_run_is_estimated_from_its_own_counts(per_layer_runs):
    """The hardware front-end reads a per-layer run (``hp_split`` "per_layer"): every
    matrix's kept counts come from its own split, and the FPGA model runs on them."""
    from fitformer.hardware.catalog import load_catalog
    from fitformer.hardware.estimate import estimate
    from fitformer.hardware.frontends import workload_from_run

    _, a, _ = per_layer_runs
    wl = workload_from_run(a.path)
    assert wl.hp_split == "per_layer" and wl.pattern == "hp"
    layers = {(v["role"], v["layer"]): v for v in _pruning(a)["layers"].values()}
    seen = 0
    for m in wl.matrices:
        if (m.role, m.layer) in layers and m.stack == "encoder":
            rows, cols = m.shape
            want = layers[(m.role, m.layer)]
            assert m.nnz == round((1 - want["achieved_sparsity"]) * rows * cols)
            assert m.balanced and m.k_per_bank == want["k"]
            seen += 1
    assert seen == 36
    rep = estimate(load_catalog(None, ["zcu104"])[0], wl, batch=1, seq_len=128,
                   precision="fx8")
    assert rep.fits and rep.latency_ms > 0


def test_per_layer_split_text_counts_the_d2s_and_names_a_bad_run(tmp_path):
    import json

    from fitformer.errors import FitformerError
    from fitformer.experiments.patterns import _split_text
    from fitformer.sparsity.sensitivity import per_layer_split_text

    layers = {f"m{i}": {"levels": [0.5 / d2, d2]} for i, d2 in
              enumerate([0.5, 0.75, 0.5, 1.0, 0.5])}
    (tmp_path / "pruning.json").write_text(json.dumps({"layers": layers}))
    assert per_layer_split_text(tmp_path) == "d2 0.5 x 3, 0.75 x 1, 1 x 1"
    row = {"hp_split": "per_layer", "hp_split_counts": "d2 0.5 x 3, 0.75 x 1, 1 x 1"}
    assert _split_text(row) == "per layer: d2 0.5 x 3, 0.75 x 1, 1 x 1"
    assert _split_text({"hp_split": {"d1": 0.4, "d2": 0.5}}) == "0.4, 0.5"
    assert _split_text({"hp_split": None}) == "-"
    with pytest.raises(FitformerError, match="no per-layer HP levels"):
        per_layer_split_text(tmp_path / "missing")
