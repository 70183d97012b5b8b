"""The int8 HP CPU kernel (issue 20, item 3): every code path equals the exact PyTorch
reference of the same quantisation, on random and real masks; the quantised layer stays
close to the masked dense one; int8 dev accuracy of a real MiniLM against its fp32."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fitformer.errors import FitformerError
from fitformer.kernels import cpu
from fitformer.kernels.int8 import QMAX, HPLinearInt8, int8_layout, int8_path, quantise_tokens
from fitformer.sparsity.patterns import make_pattern

PATHS = {"generic": "generic", "avx2": "avx2", "avx512": "avx512-vnni"}


@pytest.fixture(scope="module", autouse=True)
def _kernel():
    status = cpu.kernel_status()
    assert status["available"], status["reason"]


@pytest.fixture(params=cpu.ISAS)
def isa(request, monkeypatch):
    """Each fp32 code path in turn (it caps the int8 path), where this CPU runs it."""
    if request.param not in cpu.supported_isas():
        pytest.skip(f"this CPU does not run the {request.param} path")
    monkeypatch.setenv(cpu.ISA_ENV, request.param)
    return request.param


def _check_exact(layer: HPLinearInt8, x: torch.Tensor) -> torch.Tensor:
    """The kernel equals the reference: the int32 sums are exact, only the final float
    scaling may round once differently (a fused multiply-add on the x86 paths)."""
    with torch.inference_mode():
        y = layer(x)
        ref = layer.reference(x.reshape(-1, layer.in_features)).reshape(y.shape)
    scale = float(ref.abs().max()) or 1.0
    assert float((y - ref).abs().max()) <= 4e-7 * scale
    return y


def test_known_small_case_by_hand():
    """Two tokens, one row: codes and scales computed by hand."""
    w = torch.tensor([[0.5, -1.0, 0.25, 0.0, 2.0]])        # row scale 2 / 127
    mask = torch.tensor([[True, True, True, False, True]])
    layer = HPLinearInt8(w, mask, torch.tensor([1.0]), r=4)
    assert layer.wq.tolist() == [[32, -64, 16, 0, 127]]      # rint(w * 63.5), half to even
    x = torch.tensor([[1.0, 2.0, 0.0, 9.0, -1.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    xq, sx = quantise_tokens(x)
    assert xq.tolist() == [[14, 28, 0, 127, -14], [0, 0, 0, 0, 0]]   # rint(x * 127 / 9)
    y = _check_exact(layer, x)
    acc = 14 * 32 + 28 * -64 + 0 + (-14) * 127                      # the pruned 9.0 is out
    assert y[0, 0].item() == pytest.approx(acc * (2 / 127) * (9 / 127) + 1.0, rel=1e-6)
    assert y[1, 0].item() == 1.0                                     # a zero token: the bias


def test_layout_lists_only_quads_with_kept_weights():
    w = torch.randn(32, 24)
    mask = torch.zeros(32, 24, dtype=torch.bool)
    mask[0, 5] = mask[20, 23] = mask[31, 0] = True
    lay = int8_layout(w.numpy(), mask.numpy(), 16)
    assert lay["qptr"].tolist() == [0, 1, 3]                  # block row 0: quad 1; 1: 0, 5
    assert lay["qcols"].tolist() == [1, 0, 5]
    assert np.abs(lay["wq"][~mask.numpy()]).max() == 0 and np.abs(lay["wq"]).max() == QMAX


@settings(max_examples=60, deadline=None)
@given(m=st.integers(1, 70), n=st.integers(1, 70), tokens=st.integers(1, 150),
       density=st.sampled_from([0.0, 0.05, 0.3, 1.0]), seed=st.integers(0, 2**16),
       bias=st.booleans(), r=st.sampled_from([16, 8, 6]))
def test_random_masks_every_path_equals_reference(m, n, tokens, density, seed, bias, r):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(m, n, generator=g)
    mask = torch.rand(m, n, generator=g) < density
    layer = HPLinearInt8(w, mask, torch.randn(m, generator=g) if bias else None, r=r)
    x = torch.randn(tokens, n, generator=g) * 3
    for isa in cpu.supported_isas():
        import os

        os.environ[cpu.ISA_ENV] = isa
        try:
            _check_exact(layer, x)
        finally:
            del os.environ[cpu.ISA_ENV]


@pytest.mark.parametrize("shape", [(384, 384), (1536, 384), (100, 37)])
@pytest.mark.parametrize("sparsity,d2", [(0.5, 1.0), (0.9, 1.0), (0.9, 0.5)])
def test_hp_masks_each_path_and_close_to_dense(isa, shape, sparsity, d2):
    g = torch.Generator().manual_seed(2)
    w = torch.randn(*shape, generator=g)
    mask = make_pattern("hp", level2_density=d2).mask(w, sparsity)
    mask[:, 16:32] = False                                 # an all-pruned stripe
    mask[:16] = False                                      # an all-pruned block row
    b = torch.randn(shape[0], generator=g)
    layer = HPLinearInt8(w, mask, b)
    assert int8_path() == PATHS[isa] or (isa == "avx512" and int8_path() == "avx2")
    for tokens in (1, 17, 130):
        x = torch.randn(2, tokens, shape[1], generator=g)
        y = _check_exact(layer, x)
        dense = torch.nn.functional.linear(x, w * mask, b)
        # 8-bit codes of both operands: errors of a few % of the largest output.
        assert float((y - dense).abs().max()) <= 0.05 * float(dense.abs().max())
        assert torch.equal(y[..., :16], b[:16].expand_as(y[..., :16]))   # pruned rows


@pytest.mark.parametrize("n", [4095, 4096, 4097, 8195])
def test_rows_wider_than_one_quantisation_chunk(isa, n):
    """The per-token quantiser codes a row in 4096-column chunks: rows of one chunk, one
    column more, and two chunks plus a partial quad equal the reference on every path."""
    g = torch.Generator().manual_seed(n)
    w = torch.randn(8, n, generator=g)
    mask = torch.rand(8, n, generator=g) < 0.3
    mask[:, -1] = True                                     # the last (partial) quad is used
    layer = HPLinearInt8(w, mask, None, r=8)
    for tokens in (1, 20):
        _check_exact(layer, torch.randn(tokens, n, generator=g) * 3)


def test_bad_inputs_are_named():
    layer = HPLinearInt8(torch.randn(4, 8), torch.ones(4, 8, dtype=torch.bool))
    with pytest.raises(FitformerError, match="does not end in 8 features"):
        layer(torch.randn(3, 7))
    with pytest.raises(FitformerError, match="takes float32"):
        layer(torch.randn(3, 8, dtype=torch.float64))
    with pytest.raises(FitformerError, match="must match weight"):
        HPLinearInt8(torch.randn(4, 8), torch.ones(4, 9, dtype=torch.bool))


def test_real_minilm_int8_keeps_the_predictions(home):
    """The real pretrained MiniLM with one-shot HP masks at 0.8, converted to int8: logits on
    real dev sentences stay close to the fp32 masked model's and the classes agree."""
    import copy

    from fitformer.data import load_dataset
    from fitformer.hardware.frontends import one_shot_masks
    from fitformer.models.loading import load_classifier, load_tokenizer, resolve_model

    ref = resolve_model("default")
    net = load_classifier(ref).eval()
    masks = {k: torch.from_numpy(v) for k, v in one_shot_masks("default", "hp", 0.8).items()}
    with torch.no_grad():
        for name, m in masks.items():
            net.get_submodule(name).weight.mul_(m)
    q = copy.deepcopy(net)
    info = cpu.convert(q, masks, dtype=torch.int8)
    assert info["backend"] == "hp-cpu-int8" and len(info["converted"]) == 36
    texts = list(load_dataset("rotten-tomatoes").dev.texts[:64])
    batch = load_tokenizer(ref)(texts, padding=True, truncation=True, max_length=64,
                                return_tensors="pt")
    with torch.inference_mode():
        a, b = q(**batch).logits, net(**batch).logits
    agree = float((a.argmax(-1) == b.argmax(-1)).float().mean())
    assert agree >= 0.9, agree
