"""The translation path (issue 9): tokenizer, from-scratch training, BLEU."""

from __future__ import annotations

import pytest

from fitformer.data.translation import PairSplit
from fitformer.errors import FitformerError
from fitformer.models.seq2seq import train_tokenizer
from fitformer.training.translation import score


@pytest.fixture
def tatoeba(home):
    from fitformer.data.translation import load_tatoeba_en_fr

    return load_tatoeba_en_fr()


def test_tokenizer_round_trip_on_real_sentences(tatoeba):
    import unicodedata

    train = tatoeba.train
    tok = train_tokenizer(list(train.sources[:3000]) + list(train.targets[:3000]), 2000)
    assert len(tok) == 2000 and tok.pad_token_id == 0 and tok.eos_token_id == 1
    texts = [t for t in list(tatoeba.test.sources[:200]) + list(tatoeba.test.targets[:200])
             if "  " not in t]
    for text in texts:
        ids = tok(text)["input_ids"]
        assert ids[-1] == tok.eos_token_id
        assert tok.decode(ids, skip_special_tokens=True) == unicodedata.normalize("NFKC", text)
    with pytest.raises(FitformerError, match="vocab-size"):
        train_tokenizer(["a b"], 10)


def test_bleu_hand_checked_case():
    split = PairSplit(("one two three four five six seven eight nine ten eleven",
                       "hi there"),
                      ("le chat est sur le tapis", "bonjour"), ("", ""))
    perfect = score(["le chat est sur le tapis", "bonjour"], split)
    assert perfect.bleu == pytest.approx(100.0) and perfect.chrf == pytest.approx(100.0)
    assert perfect.n == 2 and perfect.n_short == 1          # the 11-word source is long
    # Hand count for "le chat est sur le tapis" vs the hypothesis "le chat est sur le sol":
    # matches 5/6 unigrams, 4/5 bigrams, 3/4 trigrams, 2/3 4-grams; equal lengths (BP = 1):
    # BLEU = 100 * (5/6 * 4/5 * 3/4 * 2/3) ** (1/4) = 100 * (1/3) ** 0.25 = 75.98.
    one = PairSplit(("x",), ("le chat est sur le tapis",), ("",))
    assert score(["le chat est sur le sol"], one).bleu == pytest.approx(
        100 * (1 / 3) ** 0.25, abs=0.01)


@pytest.mark.slow
def test_tiny_translation_run_trains_and_scores(home):
    from fitformer.training.finetune import finetune

    res = finetune(task="translation", dataset="tatoeba-en-fr", budget="tiny")
    m = res.metrics
    assert m["task"] == "translation" and m["budget"] == "tiny" and m["smoke"]
    assert m["loss"]["train_last"] < m["loss"]["train_first"] - 0.5   # it learns
    assert m["split_sizes"] == {"train": 320, "dev": 160, "test": 160}
    for s in ("dev", "test"):
        for p in ("fp32", "fx16", "fx8"):                      # design.md §4: all three
            assert 0.0 <= m["bleu"][s][p] <= 100.0
    assert m["scores"]["test_beam4"]["num_beams"] == 4
    assert (res.path / "tokenizer.json").is_file() and (res.path / "model.safetensors").is_file()
    from fitformer.models.seq2seq import load_translation_model

    model, tok = load_translation_model(str(res.path))
    q = [n for n, _ in model.named_modules() if n.endswith("encoder_attn.q_proj")]
    assert len(q) == 3                                   # explicit cross-attention linears
    again = finetune(task="translation", dataset="tatoeba-en-fr", budget="tiny")
    assert again.cached and again.path == res.path

    # Fixed point reaches the encoder-decoder: every linear and the attention of self- and
    # cross-attention; fx16 stays close to fp32, fx8 moves further.
    import torch

    from fitformer.data.translation import load_tatoeba_en_fr
    from fitformer.models.fixed_point import _attention_modules, calibrate, fixed_point
    from fitformer.training.translation import EncodedPairs

    assert len(_attention_modules(model)) == 9           # 3 encoder + 3 x 2 decoder
    pairs = EncodedPairs(tok, load_tatoeba_en_fr().dev, 64)
    batch = pairs.batch(list(range(32)))
    cal = calibrate(model, [batch])
    with torch.no_grad():
        ref = model(**batch).loss.item()
        losses = {}
        for p in ("fx16", "fx8"):
            with fixed_point(model, p, cal):
                losses[p] = model(**batch).loss.item()
    assert abs(losses["fx16"] - ref) < 0.01 * ref
    assert abs(losses["fx8"] - ref) > abs(losses["fx16"] - ref)

    # HP pruning applies to every encoder and decoder linear, cross-attention included.
    import json

    import torch
    from safetensors.torch import load_file

    from fitformer.sparsity.prune import PruneSpec, prune

    pr = prune(task="translation", spec=PruneSpec("hp", 0.8), from_dir=res.path,
               budget="tiny")
    pm = pr.metrics
    assert pm["task"] == "translation" and pm["bleu_beam"] is None   # greedy for a point
    assert pm["sparsity"]["overall"] >= 0.8
    pruning = json.loads((pr.path / "pruning.json").read_text())
    names = set(pruning["layers"])
    assert len(names) == 48                     # 3 x 6 encoder + 3 x 10 decoder linears
    assert sum(".encoder_attn." in n for n in names) == 12 and "lm_head" not in names
    masks = load_file(str(pr.path / "masks.safetensors"))
    pruned_model, _ = load_translation_model(str(pr.path))
    for name, mask in masks.items():
        w = pruned_model.get_submodule(name).weight
        assert torch.all(w[~mask.bool()] == 0)
    with pytest.raises(FitformerError, match="from scratch"):
        finetune("some-model", task="translation", budget="tiny")

    # The main job with BLEU as AC: select end to end on the tiny run (LC loose, so the
    # dense point qualifies and nothing more is trained).
    from fitformer.select import select
    from fitformer.select.report import Report

    out = res.path.parent.parent / "select-out"
    sel = select(task="translation", dense_dir=res.path, budget="tiny",
                 only=["ultra96-v2", "rtx-4090"], latency_ms=1e5, seq_len=8, tgt_len=4,
                 out=out, log=lambda m: None)
    rep = json.loads((out / "report.json").read_text())
    Report.model_validate(rep)
    assert rep["metric"] == {"name": "bleu", "scale_max": 100.0, "label": "BLEU"}
    assert rep["constraints"]["tgt_len"] == 4 and rep["dataset"] == "tatoeba-en-fr"
    dense_bleu = m["bleu"]["dev"]["fp32"]
    assert rep["target_accuracy_dev"] == pytest.approx(max(0.0, dense_bleu - 2.0))
    if dense_bleu <= 2.0:       # a tiny model: the default floor would be <= 0 BLEU
        assert "is at or below 0 BLEU" in rep["target_note"]
        # The same drop given by the user is refused: every output would meet it.
        with pytest.raises(FitformerError, match="which any output meets"):
            select(task="translation", dense_dir=res.path, budget="tiny", max_bleu_drop=2,
                   only=["rtx-4090"], latency_ms=1e5, seq_len=8, tgt_len=4, out=False,
                   log=lambda m: None)
    assert sel.exit_code == 0 and rep["best_device"] == "ultra96-v2"   # $249 < $1,599
    fpga = next(d for d in rep["devices"] if d["id"] == "ultra96-v2")
    assert fpga["sparsity"] == 0.0 and fpga["method"] == "model" and fpga["fits"]
    assert (out / "model" / "model.safetensors").is_file() and (out / "design.json").is_file()
    with pytest.raises(FitformerError, match="--min-bleu"):
        select(task="translation", dense_dir=res.path, budget="tiny", min_accuracy=0.5,
               out=False)
    with pytest.raises(FitformerError, match="--min-bleu 150"):
        select(task="translation", dense_dir=res.path, budget="tiny", min_bleu=150,
               out=False)
