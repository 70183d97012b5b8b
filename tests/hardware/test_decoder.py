"""The encoder-decoder (translation) path of the accelerator model and simulator: decoder
steps, masked self-attention over the key/value cache, cross-attention, lm_head (issue 9)."""

from __future__ import annotations

import numpy as np
import pytest

from fitformer.errors import FitformerError
from fitformer.hardware.accelerator import (
    Inference,
    Platform,
    attention_unit,
    estimate_design,
    linear_unit,
    minimal_design,
)
from fitformer.hardware.frontends import (
    dense_workload,
)
from fitformer.hardware.workload import (
    ModelDims,
    Workload,
    balanced_work,
    dims_from_config,
)

PLAT = Platform("DSP48E2", 10.0, False, {"dsp": 1e6, "bram_18k": 1e6, "uram": 0, "lut": 1e9,
                                         "ff": 1e9}, 100.0)
SEQ2SEQ = ModelDims(layers=1, hidden=32, heads=2, intermediate=64, vocab=48, num_labels=48,
                    decoder_layers=1)


def _wl(matrices=()) -> Workload:
    return Workload(SEQ2SEQ, tuple(matrices), (16, 16), 4, "hp", 0.0, None, "test")


def test_attention_decoder_hand_computed():
    # head_dim 16: fill = 8 + log2 16 = 12; fp32 latency 12, so a head of q queries against
    # kv keys takes 4 * kv * ceil(q / T) + 2 * 12 + 3 * 12 = 4 kv ceil(q / 2) + 60 (T = 2).
    # 2 heads, H_par = 1, batch 1, source 2 tokens, 3 decoder steps:
    # encoder: 2 x (4 * 2 * 1 + 60) = 136;
    # masked self-attention, step t against t cached keys: 2 x sum_t (4 t + 60) = 2 x 204;
    # cross-attention, each step against the 2 source keys: 2 x 3 x (4 * 2 + 60) = 408.
    res = attention_unit({"H_par": 1, "T": 2}, _wl(), minimal_design("fx16"), PLAT,
                         Inference(1, 2, 3))
    assert res.rows == [("attention", 0, 136, "compute", "encoder"),
                        ("attention", 0, 408, "compute", "decoder"),
                        ("attention", 0, 408, "compute", "cross")]


def test_decoder_linears_run_once_per_step_on_one_token():
    # The 32x32 HP matrix of test_linear_unit_hand_computed_cycles (P = 2, T = 1):
    # load 8, compute 32 + fill 10 = 42, reduce 8 + 1 = 9 per pass of T tokens.
    # Decoder q: 1 token per step, 3 steps: 3 x (8 + 42 + 9) = 177.
    # Cross k (the encoder's 2 source tokens, once): 8 + 42 + 9 + (2 - 1) x 42 = 101.
    q = balanced_work("q", 0, (32, 32), 16, 16, 4, K1=1, k=2, stack="decoder")
    k = balanced_work("k", 0, (32, 32), 16, 16, 4, K1=1, k=2, stack="cross")
    cq = balanced_work("q", 0, (32, 32), 16, 16, 4, K1=1, k=2, stack="cross")
    design = minimal_design("fx16").with_knobs("qkv", {"P": 2, "T": 1})
    res = linear_unit("qkv", [q, k, cq], {"P": 2, "T": 1}, _wl([q, k, cq]), design, PLAT,
                      Inference(1, 2, 3))
    assert res.rows == [("q", 0, 177, "compute", "decoder"),
                        ("k", 0, 101, "compute", "cross"),
                        ("q", 0, 177, "compute", "cross")]


def test_lm_head_hand_computed_with_argmax():
    # lm_head 48 x 32 dense: 2 stripes of 48 rows x 4 per bank = 192 cycles each; P = 1,
    # T = 1, one add & norm lane: load 32 / 4 = 8, compute 384 + 10 = 394, reduce 48 / 4
    # = 12, argmax over 48 logits on 1 lane = 48: 462 per step, 3 steps = 1386.
    head = balanced_work("lm_head", None, (48, 32), 16, 16, 4, K1=3, k=4, stack="decoder")
    res = linear_unit("attn_out", [head], {"P": 1, "T": 1}, _wl([head]),
                      minimal_design("fx16"), PLAT, Inference(1, 2, 3))
    assert res.rows == [("lm_head", None, 1386, "compute", "decoder")]


def test_whole_model_latency_structure():
    wl = dense_workload(SEQ2SEQ)
    slots = SEQ2SEQ.prunable_slots()
    assert len(slots) == 6 + 10 and sum(s[2] == "cross" for s in slots) == 4
    assert [m.role for m in wl.matrices][-1] == "lm_head"
    design = minimal_design("fx16")
    one = estimate_design(wl, design, PLAT, 1, 4, tgt_len=1)
    two = estimate_design(wl, design, PLAT, 1, 4, tgt_len=2)
    # The encoder does not depend on tgt_len; every per-step linear doubles.
    for unit in ("qkv", "attn_out", "ffn_in", "ffn_out"):
        enc1 = [r for r in one.units[unit].rows if r.stack == "encoder"]
        enc2 = [r for r in two.units[unit].rows if r.stack == "encoder"]
        assert enc1 == enc2
        for r1, r2 in zip(one.units[unit].rows, two.units[unit].rows, strict=True):
            if r1.stack == "decoder" or (r1.stack == "cross" and r1.label in ("q", "attn_out")):
                assert r2.cycles == 2 * r1.cycles
    # Masked self-attention grows faster than linearly (the cache grows each step).
    dec = [r.cycles for e in (one, two) for r in e.units["attention"].rows
           if r.stack == "decoder"]
    assert dec[1] > 2 * dec[0]
    # An encoder-only estimate ignores tgt_len.
    enc_only = dense_workload(ModelDims(1, 32, 2, 64, 48))
    assert estimate_design(enc_only, design, PLAT, 1, 4, tgt_len=5).total_cycles == \
        estimate_design(enc_only, design, PLAT, 1, 4).total_cycles


def test_seq2seq_needs_tgt_len_and_positions():
    dims = ModelDims(1, 32, 2, 64, 48, max_positions=16, decoder_layers=1)
    with pytest.raises(FitformerError, match="--tgt-len"):
        dims.check_seq_len(8, 0)
    with pytest.raises(FitformerError, match="--tgt-len 17 exceeds"):
        dims.check_seq_len(8, 17)
    with pytest.raises(FitformerError, match="--src-len 17 exceeds"):
        dims.check_seq_len(17, 4)


def test_dims_from_mbart_config():
    from transformers import MBartConfig

    cfg = MBartConfig(vocab_size=100, d_model=32, encoder_layers=2, decoder_layers=3,
                      encoder_attention_heads=2, decoder_attention_heads=2,
                      encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=40)
    d = dims_from_config(cfg)
    assert (d.layers, d.decoder_layers, d.hidden, d.heads, d.intermediate, d.vocab) == \
        (2, 3, 32, 2, 64, 100)
    assert d.final_norm and d.is_seq2seq and d.shape("lm_head") == (100, 32)
    bad = MBartConfig(vocab_size=100, d_model=32, encoder_layers=2, decoder_layers=3,
                      encoder_attention_heads=2, decoder_attention_heads=4,
                      encoder_ffn_dim=64, decoder_ffn_dim=64)
    with pytest.raises(FitformerError, match="decoder layers"):
        dims_from_config(bad)


def test_real_translation_masks_simulate_without_stalls(tmp_path):
    """HP masks on every linear of a real (untrained) translation model: the workload
    tags the stacks, and the simulator runs a decoder layer step by step with zero bank
    conflicts and zero imbalance, equal to the analytical cycles."""
    from fitformer.hardware.catalog import load_catalog
    from fitformer.hardware.frontends import workload_from_masks
    from fitformer.hardware.simulator import simulate
    from fitformer.models.layers import linear_layers
    from fitformer.models.seq2seq import Seq2SeqShape, new_translation_model, train_tokenizer
    from fitformer.sparsity.patterns import Hierarchical

    tok = train_tokenizer(["the cat sat on the mat", "le chat est sur le tapis"] * 20, 120)
    net = new_translation_model(tok, Seq2SeqShape(vocab_size=120, d_model=64,
                                                  encoder_layers=1, decoder_layers=1,
                                                  heads=2, ffn_dim=128, max_positions=32))
    pat = Hierarchical(16, 16, banks=4)
    masks = {}
    for info in linear_layers(net):
        if info.prunable:
            w = net.get_submodule(info.name).weight.detach()
            masks[info.name] = pat.mask_from_levels(w, pat.plan(info.shape, 0.8)).numpy()
    assert len(masks) == 6 + 10
    wl = workload_from_masks(masks, net.config, pattern="hp", sparsity=0.8)
    assert {m.stack for m in wl.matrices} == {"encoder", "decoder", "cross"}
    assert all(m.balanced for m in wl.matrices)
    dev = load_catalog(only=["zcu104"], include_host=False)[0]
    name = "model.decoder.layers.0.encoder_attn.q_proj"
    rep = simulate(dev, wl, masks, [name], batch=1, seq_len=8, tgt_len=5, use_cache=False)
    assert rep["stack"] == "cross" and rep["tgt_len"] == 5
    assert rep["stalls"]["bank_conflict"] == 0 and rep["stalls"]["imbalance_idle"] == 0
    assert rep["passes"] % 5 == 0                     # one run of the unit per step
    if rep["stalls"]["dram_wait"] == 0:
        assert rep["cycles"] == rep["analytical_cycles"]
    np.testing.assert_allclose(rep["ratio_simulated_to_analytical"], 1.0, rtol=0.05)
