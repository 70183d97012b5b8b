"""The HP CPU kernel (issues 8 and 20): equality with the masked dense layer on every code
path (generic, AVX2, AVX-512 where the CPU has them; FITFORMER_CPU_ISA forces one) and both
token paths (tiles, GEMV for few tokens), layouts, fallbacks."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fitformer.errors import FitformerError
from fitformer.kernels import cpu
from fitformer.kernels.cpu import HPLinear, convert, kernel_status, load_kernel
from fitformer.sparsity.patterns import make_pattern


@pytest.fixture(scope="module", autouse=True)
def _kernel():
    status = kernel_status()
    assert status["available"], status["reason"]   # g++ is on every machine we support
    # Exercise the kernel at every token count (layers use dense below MIN_TOKENS).
    saved, cpu.MIN_TOKENS = cpu.MIN_TOKENS, 1
    yield
    cpu.MIN_TOKENS = saved


def _rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    scale = float(ref.abs().max()) or 1.0
    return float((y.float() - ref.float()).abs().max()) / scale


def _check(w, mask, b, x, tol=1e-5):
    layer = HPLinear(w, mask, b)
    with torch.inference_mode():
        y = layer(x)
    ref = torch.nn.functional.linear(x, w * mask, b)
    assert y.shape == ref.shape and y.dtype == ref.dtype
    assert _rel_err(y, ref) <= tol
    assert torch.equal(layer.dense_weight(), w * mask)
    return layer


@given(m=st.integers(1, 70), n=st.integers(1, 70), tokens=st.integers(1, 150),
       density=st.sampled_from([0.0, 0.02, 0.3, 0.7, 1.0]), seed=st.integers(0, 2**16),
       bias=st.booleans())
def test_random_masks_equal_masked_dense(m, n, tokens, density, seed, bias):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(m, n, generator=g)
    mask = torch.rand(m, n, generator=g) < density
    b = torch.randn(m, generator=g) if bias else None
    _check(w, mask, b, torch.randn(tokens, n, generator=g))


@pytest.mark.parametrize("shape", [(384, 384), (1536, 384), (100, 37), (312, 312)])
@pytest.mark.parametrize("sparsity,d2", [(0.5, 1.0), (0.8, 0.75), (0.9, 0.5), (0.95, 0.25)])
def test_hp_masks_equal_masked_dense(shape, sparsity, d2):
    g = torch.Generator().manual_seed(1)
    w = torch.randn(*shape, generator=g)
    mask = make_pattern("hp", level2_density=d2).mask(w, sparsity)
    layer = _check(w, mask, torch.randn(shape[0], generator=g),
                   torch.randn(2, 130, shape[1], generator=g))
    # HP balance: the rows of a block row keep equal counts, so no padding is stored...
    assert int(layer.values.numel()) == int(mask.sum())
    # ... and with d2 = 1 they keep the same columns (two rows per pass).
    if d2 == 1.0 and shape[0] % 16 == 0:
        assert bool(layer.shared.all())


def test_from_encoded_hp_format():
    from fitformer.formats.formats import HPFormat

    g = torch.Generator().manual_seed(2)
    w = torch.randn(96, 80, generator=g)
    mask = make_pattern("hp", level2_density=0.5).mask(w, 0.8)
    enc = HPFormat().encode((w * mask).numpy(), mask.numpy())
    b = torch.randn(96, generator=g)
    layer = HPLinear.from_encoded(enc, b)
    x = torch.randn(40, 80, generator=g)
    assert _rel_err(layer(x), torch.nn.functional.linear(x, w * mask, b)) <= 1e-5


def test_edge_cases_empty_stripes_dense_and_near_empty():
    g = torch.Generator().manual_seed(3)
    w, b = torch.randn(48, 64, generator=g), torch.randn(48, generator=g)
    x = torch.randn(7, 64, generator=g)
    stripes = torch.ones(48, 64, dtype=torch.bool)
    stripes[:, 16:48] = False                      # two whole stripes empty
    _check(w, stripes, b, x)
    _check(w, torch.ones(48, 64, dtype=torch.bool), b, x)        # dense
    one = torch.zeros(48, 64, dtype=torch.bool)
    one[5, 63] = True                               # a single kept weight
    _check(w, one, b, x)
    empty = _check(w, torch.zeros(48, 64, dtype=torch.bool), b, x)
    assert torch.equal(empty(x), b.expand(7, 48))  # all pruned: the bias alone


def test_batch_shapes():
    g = torch.Generator().manual_seed(4)
    w = torch.randn(32, 24, generator=g)
    mask = torch.rand(32, 24, generator=g) < 0.4
    layer = HPLinear(w, mask)
    for lead in [(), (1,), (3, 5), (2, 3, 4)]:
        x = torch.randn(*lead, 24, generator=g)
        y = layer(x)
        assert y.shape == (*lead, 32)
        assert _rel_err(y, torch.nn.functional.linear(x, w * mask)) <= 1e-5
    # A non-contiguous input (a transposed view) is handled.
    xt = torch.randn(24, 9, generator=g).t()
    assert _rel_err(layer(xt), torch.nn.functional.linear(xt, w * mask)) <= 1e-5


def test_bf16_matches_bf16_dense():
    g = torch.Generator().manual_seed(5)
    w = torch.randn(64, 96, generator=g)
    mask = make_pattern("hp").mask(w, 0.8)
    b = torch.randn(64, generator=g)
    x = torch.randn(200, 96, generator=g).bfloat16()
    layer = HPLinear(w * mask, mask, b, dtype=torch.bfloat16)
    y = layer(x)
    assert y.dtype == torch.bfloat16
    ref = torch.nn.functional.linear(x, (w * mask).bfloat16(), b.bfloat16())
    # Same bf16 inputs, fp32 accumulation, one rounding: within a couple of bf16 ulps.
    assert _rel_err(y, ref) <= 1e-2


def test_gradients_and_fallback_use_masked_dense(monkeypatch):
    g = torch.Generator().manual_seed(6)
    w = torch.randn(20, 30, generator=g)
    mask = torch.rand(20, 30, generator=g) < 0.5
    layer = HPLinear(w, mask)
    x = torch.randn(4, 30, generator=g, requires_grad=True)
    y = layer(x)
    y.sum().backward()                              # dense path keeps autograd working
    assert torch.allclose(x.grad, (w * mask).sum(0).expand(4, 30), atol=1e-5)
    monkeypatch.setenv("FITFORMER_CPU_KERNEL", "off")
    load_kernel.cache_clear()
    try:
        assert layer.backend.startswith("dense-fallback")
        with torch.no_grad():
            assert _rel_err(layer(x), torch.nn.functional.linear(x, w * mask)) <= 1e-6
    finally:
        monkeypatch.delenv("FITFORMER_CPU_KERNEL")
        load_kernel.cache_clear()
    assert layer.backend == "hp-cpu"


def test_bad_inputs_are_named():
    w = torch.randn(8, 8)
    with pytest.raises(FitformerError, match="mask"):
        HPLinear(w, torch.ones(8, 9, dtype=torch.bool))
    with pytest.raises(FitformerError, match="bias"):
        HPLinear(w, w != 0, torch.zeros(3))
    with pytest.raises(FitformerError, match="dtype"):
        HPLinear(w, w != 0, dtype=torch.float16)
    layer = HPLinear(w, w != 0)
    with pytest.raises(FitformerError, match="does not end in 8 features"):
        layer(torch.randn(2, 7))
    with pytest.raises(FitformerError, match="dtype"):
        layer(torch.ones(2, 8, dtype=torch.int64))
    net = torch.nn.Sequential(torch.nn.Linear(4, 4))
    with pytest.raises(FitformerError, match="names no nn.Linear"):
        convert(net, {"nope": torch.ones(4, 4, dtype=torch.bool)})
    with pytest.raises(FitformerError, match="is \\(3, 4\\)"):
        convert(net, {"0": torch.ones(3, 4, dtype=torch.bool)})


def test_convert_real_minilm_on_real_sentences(home):
    """The real pretrained MiniLM with one-shot HP masks at 0.9: every pruned linear is
    swapped and the logits on real Rotten Tomatoes dev sentences equal the masked model's."""
    import copy

    from fitformer.data import load_dataset
    from fitformer.hardware.frontends import one_shot_masks
    from fitformer.models.loading import load_classifier, load_tokenizer, resolve_model

    ref = resolve_model("default")
    net = load_classifier(ref).eval()
    masks = {k: torch.from_numpy(v) for k, v in one_shot_masks("default", "hp", 0.9).items()}
    with torch.no_grad():
        for name, m in masks.items():
            net.get_submodule(name).weight.mul_(m)
    hp = copy.deepcopy(net)
    info = convert(hp)                               # masks inferred from the zeros
    assert sorted(info["converted"]) == sorted(masks) and len(masks) == 36
    assert info["backend"] == "hp-cpu"
    assert all(isinstance(hp.get_submodule(n), HPLinear) for n in masks)
    texts = list(load_dataset("rotten-tomatoes").dev.texts[:48])
    batch = load_tokenizer(ref)(texts, padding=True, truncation=True, max_length=64,
                                return_tensors="pt")
    with torch.inference_mode():
        a, b = hp(**batch).logits, net(**batch).logits
    assert float((a - b).abs().max()) <= 1e-4 * max(1.0, float(b.abs().max()))
    assert np.array_equal(a.argmax(-1).numpy(), b.argmax(-1).numpy())


def test_zero_sizes_small_inputs_and_casts():
    g = torch.Generator().manual_seed(7)
    w = torch.randn(24, 40, generator=g)
    mask = torch.rand(24, 40, generator=g) < 0.3
    layer = HPLinear(w, mask)
    assert layer(torch.randn(0, 40)).shape == (0, 24)          # no tokens: empty, no crash
    assert layer(torch.randn(2, 0, 40)).shape == (2, 0, 24)
    with pytest.raises(FitformerError, match="features"):
        layer(torch.tensor(1.0))
    saved, cpu.MIN_TOKENS = cpu.MIN_TOKENS, 16
    try:                                                       # few tokens: GEMV, equal
        x = torch.randn(3, 40, generator=g)
        assert _rel_err(layer(x), torch.nn.functional.linear(x, w * mask)) <= 1e-5
    finally:
        cpu.MIN_TOKENS = saved
    net = torch.nn.Sequential(torch.nn.Linear(40, 24))
    net[0].weight.data.mul_(mask)
    assert convert(net, {"0": mask})["converted"] == ["0"]
    net.bfloat16()                                             # casting after convert works
    xb = torch.randn(50, 40, generator=g).bfloat16()
    assert net(xb).dtype == torch.bfloat16
    half = torch.nn.Sequential(torch.nn.Linear(40, 24)).half()
    half[0].weight.data.mul_(mask.half())
    with pytest.raises(FitformerError, match="float32 or bfloat16"):
        convert(half, {"0": mask})


def test_api_exports_convert():
    import fitformer

    assert fitformer.convert is convert and fitformer.HPLinear is HPLinear


# --- code paths (issue 20): every ISA path this CPU runs, both token paths ----------------

ISA_PATHS = cpu.ISAS


@pytest.fixture(params=ISA_PATHS)
def isa(request, monkeypatch):
    """Each code path in turn, forced with FITFORMER_CPU_ISA (skipped where the CPU lacks
    it: an AVX-512 machine runs all three)."""
    if request.param not in cpu.supported_isas():
        pytest.skip(f"this CPU does not run the {request.param} path")
    monkeypatch.setenv(cpu.ISA_ENV, request.param)
    assert cpu.isa_path() == request.param
    return request.param


@pytest.fixture(params=["tiles", "gemv"])
def token_path(request, monkeypatch):
    """The tile path at every token count, or the GEMV path at every token count."""
    monkeypatch.setattr(cpu, "MIN_TOKENS", 1 if request.param == "tiles" else 10**9)
    return request.param


def _all_pruned_stripes(mask: torch.Tensor) -> torch.Tensor:
    mask = mask.clone()
    mask[:, 16:32] = False                               # a whole stripe pruned
    mask[:16] = False                                    # a whole row group pruned
    return mask


@pytest.mark.parametrize("shape", [(384, 384), (100, 37), (48, 64)])
@pytest.mark.parametrize("sparsity,d2", [(0.5, 1.0), (0.9, 1.0), (0.9, 0.5)])
def test_isa_paths_equal_masked_dense_on_hp_masks(isa, token_path, shape, sparsity, d2):
    g = torch.Generator().manual_seed(11)
    w = torch.randn(*shape, generator=g)
    mask = make_pattern("hp", level2_density=d2).mask(w, sparsity)
    b = torch.randn(shape[0], generator=g)
    for m in (mask, _all_pruned_stripes(mask)):
        for tokens in (1, 3, 15, 16, 97, 130):
            _check(w, m, b, torch.randn(tokens, shape[1], generator=g))


@given(m=st.integers(1, 70), n=st.integers(1, 70), tokens=st.integers(1, 40),
       density=st.sampled_from([0.0, 0.05, 0.5, 1.0]), seed=st.integers(0, 2**16),
       bias=st.booleans(), isa=st.sampled_from(ISA_PATHS), gemv=st.booleans())
def test_isa_paths_random_masks(m, n, tokens, density, seed, bias, isa, gemv):
    if isa not in cpu.supported_isas():
        return
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(m, n, generator=g)
    mask = torch.rand(m, n, generator=g) < density
    b = torch.randn(m, generator=g) if bias else None
    x = torch.randn(tokens, n, generator=g)
    saved = cpu.MIN_TOKENS
    try:
        os.environ[cpu.ISA_ENV] = isa
        cpu.MIN_TOKENS = 10**9 if gemv else 1
        _check(w, mask, b, x)
    finally:
        os.environ.pop(cpu.ISA_ENV, None)
        cpu.MIN_TOKENS = saved


def test_isa_paths_bf16(isa, token_path):
    g = torch.Generator().manual_seed(12)
    w = torch.randn(80, 96, generator=g)
    mask = _all_pruned_stripes(make_pattern("hp").mask(w, 0.8))
    b = torch.randn(80, generator=g)
    layer = HPLinear(w * mask, mask, b, dtype=torch.bfloat16)
    ref_w, ref_b = (w * mask).bfloat16(), b.bfloat16()
    for tokens in (1, 7, 16, 150):
        x = torch.randn(tokens, 96, generator=g).bfloat16()
        y = layer(x)
        assert y.dtype == torch.bfloat16
        assert _rel_err(y, torch.nn.functional.linear(x, ref_w, ref_b)) <= 1e-2


def test_isa_paths_on_real_minilm_layers(home, isa):
    """Real pretrained MiniLM weights with their one-shot HP masks at 0.9 (default split)
    and at 0.8 with d2 = 1: one token (GEMV), a few tokens, and a tile, on each path."""
    from fitformer.hardware.frontends import one_shot_masks
    from fitformer.models.loading import load_classifier, resolve_model

    net = load_classifier(resolve_model("default")).eval()
    g = torch.Generator().manual_seed(13)
    names = ("bert.encoder.layer.0.attention.self.query",
             "bert.encoder.layer.3.intermediate.dense", "bert.encoder.layer.5.output.dense")
    for sparsity, d2 in ((0.9, None), (0.8, 1.0)):
        masks = one_shot_masks("default", "hp", sparsity, level2_density=d2)
        for name in names:
            lin = net.get_submodule(name)
            mask = torch.from_numpy(masks[name])
            layer = HPLinear.from_linear(lin, mask)
            for tokens in (1, 5, 64):
                x = torch.randn(tokens, lin.in_features, generator=g)
                with torch.inference_mode():
                    ref = torch.nn.functional.linear(x, lin.weight * mask, lin.bias)
                    assert _rel_err(layer(x), ref) <= 1e-5, (name, tokens)


def test_gemv_path_below_min_tokens_lists_kept_columns_only():
    g = torch.Generator().manual_seed(14)
    w = torch.randn(40, 64, generator=g)
    mask = make_pattern("hp", level2_density=1.0).mask(w, 0.75)
    saved = cpu.MIN_TOKENS
    cpu.MIN_TOKENS = 16
    try:
        layer = HPLinear(w, mask, torch.randn(40, generator=g))
        assert layer._gemv is None
        x = torch.randn(64, generator=g)                      # one token, no batch dim
        with torch.inference_mode():
            y = layer(x)
        assert y.shape == (40,) and layer._gemv is not None   # the GEMV layout was built
        gptr, gcols, gvals, gbias = layer._gemv
        assert gvals.shape == (int(gptr[-1]), 16) and gbias.shape == (48,)
        # Level 1 is exploited: a row group lists the columns of its kept blocks only.
        groups = torch.zeros(48, 64, dtype=torch.bool)
        groups[:40] = mask
        assert int(gptr[-1]) == int(groups.reshape(3, 16, 64).any(dim=1).sum()) < 3 * 64
        assert _rel_err(y, torch.nn.functional.linear(x, w * mask, layer.bias)) <= 1e-5
    finally:
        cpu.MIN_TOKENS = saved


def test_isa_switch_is_reported_and_checked(monkeypatch):
    supported = cpu.supported_isas()
    assert supported[0] == "generic" and set(supported) <= set(ISA_PATHS)
    monkeypatch.delenv(cpu.ISA_ENV, raising=False)
    status = kernel_status()
    assert status["isa"] == supported[-1] and status["supported_isas"] == list(supported)
    assert status["cpu"]
    monkeypatch.setenv(cpu.ISA_ENV, "generic")
    assert kernel_status()["isa"] == "generic"
    monkeypatch.setenv(cpu.ISA_ENV, "sse9")
    layer = HPLinear(torch.randn(4, 4), torch.ones(4, 4, dtype=torch.bool))
    with pytest.raises(FitformerError, match="FITFORMER_CPU_ISA=sse9 is unknown"):
        layer(torch.randn(20, 4))
    if "avx512" not in supported:
        monkeypatch.setenv(cpu.ISA_ENV, "avx512")
        with pytest.raises(FitformerError, match="not supported by this CPU"):
            layer(torch.randn(20, 4))
