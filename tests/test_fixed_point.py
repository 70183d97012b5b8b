"""Fixed-point arithmetic (design.md §4): hand cases and the model-level context."""

import pytest
import torch

from fitformer.models.fixed_point import (
    _instrumented,
    calibrate,
    fixed_point,
    int_bits,
    quantize_fixed,
    width_of,
)


@pytest.mark.parametrize("max_abs,bits", [(0.9, 1), (1.0, 2), (1.5, 2), (3.9, 3), (4.0, 4),
                                          (0.2, -1), (0.0, 1)])
def test_int_bits_is_floor_log2_plus_two(max_abs, bits):
    # 0.9: floor(log2 0.9) = -1 -> 1 bit (sign only, range [-1, 1)); 4.0 -> 2 + 2 = 4.
    assert int_bits(max_abs) == bits


def test_quantize_hand_cases():
    # ap_fixed<8, 3>: step 2^-5 = 0.03125, range [-4, 4 - 0.03125].
    x = torch.tensor([0.0, 0.03, 0.05, -1.01, 3.99, 5.0, -4.5])
    q = quantize_fixed(x, 8, 3)
    assert q.tolist() == pytest.approx([0.0, 0.03125, 0.0625, -1.0, 3.96875, 3.96875, -4.0])
    # 16 bits, I = 2: step 2^-14.
    assert quantize_fixed(torch.tensor([0.1]), 16, 2).item() == pytest.approx(
        round(0.1 * 2**14) / 2**14)


def test_width_of():
    assert width_of("fp32") is None and width_of("fx16") == 16 and width_of("fx8") == 8
    with pytest.raises(ValueError):
        width_of("int4")


def test_fixed_point_model_context(real_cache):
    from fitformer.models import load_classifier, load_tokenizer, resolve_model

    ref = resolve_model("default")
    torch.manual_seed(0)
    net = load_classifier(ref, ("neg", "pos"))
    tok = load_tokenizer(ref)
    batch = dict(tok(["a warm, funny film", "tedious and far too long"], padding=True,
                     return_tensors="pt"))
    with torch.no_grad():
        ref_logits = net(**batch).logits
        cal = calibrate(net, [batch])
        # The instrumented attention with identity hooks reproduces the library's attention.
        with _instrumented(net, lambda name, x: x, lambda name: (lambda which, x: x)):
            assert net.config._attn_implementation == "fitformer_fixed_point"
            torch.testing.assert_close(net(**batch).logits, ref_logits, rtol=1e-5, atol=1e-5)
        assert net.config._attn_implementation != "fitformer_fixed_point"
        # Every linear input and every Q, K, V, probs operand is calibrated.
        n_linear = sum(isinstance(m, torch.nn.Linear) for m in net.modules())
        assert len(cal.max_abs) == n_linear + 6 * 4
        errors = {}
        for p in ("fp32", "fx16", "fx8"):
            with fixed_point(net, p, cal) as used:
                errors[p] = (net(**batch).logits - ref_logits).abs().max().item()
                if p != "fp32":
                    w = net.bert.encoder.layer[0].attention.self.query.weight
                    step = 2.0 ** (used["bert.encoder.layer.0.attention.self.query.weight"]
                                   - int(p[2:]))
                    assert torch.equal(torch.round(w / step) * step, w)  # on the grid
        assert errors["fp32"] == 0.0
        assert 0 < errors["fx16"] < 0.01 < errors["fx8"] < 1.0
        assert torch.equal(net(**batch).logits, ref_logits)  # weights restored


# --- The exact reference path (issue 19) -------------------------------------------------

def _ulp_err(got, ref):
    import numpy as np

    ref32 = np.float32(ref)
    ulp = np.spacing(np.abs(ref32)).astype(np.float64)
    return np.abs(got.astype(np.float64) - ref) / ulp


def test_exact_exp_within_two_ulp():
    import math

    import numpy as np

    from fitformer.models.fixed_point import exp_f32

    x = np.linspace(-87, 0, 200_001, dtype=np.float32)
    ref = np.array([math.exp(float(v)) for v in x])
    assert _ulp_err(exp_f32(x), ref).max() <= 2.0
    assert exp_f32(np.float32([0.0, -100.0])).tolist() == [1.0, 0.0]


def test_exact_erf_gelu_tanh_bounds():
    import math

    import numpy as np

    from fitformer.models.fixed_point import erf_f32, gelu_f32, tanh_f32

    x = np.linspace(-8, 8, 100_001, dtype=np.float32)
    xd = x.astype(np.float64)
    erf = np.array([math.erf(v) for v in xd])
    assert np.abs(erf_f32(x) - erf).max() <= 5e-7          # A&S 7.1.26: 1.5e-7 + rounding
    gelu = np.array([v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in xd])
    bound = 3e-7 * np.abs(xd) + 2 * np.spacing(np.abs(gelu).astype(np.float32))
    assert (np.abs(gelu_f32(x) - gelu) <= bound).all()
    assert np.abs(tanh_f32(x) - np.tanh(xd)).max() <= 1.5e-7


def test_exact_linear_is_integer_arithmetic():
    import numpy as np

    from fitformer.models.fixed_point import FixedType, accumulator_type, exact_matmul

    rng = np.random.default_rng(0)
    x_t, w_t = FixedType(16, 3), FixedType(16, 1)
    x = x_t.codes(rng.normal(size=(5, 1536)))
    w = w_t.codes(rng.normal(scale=0.2, size=(7, 1536)))
    exact = [[sum(int(a) * int(b) for a, b in zip(xr, wr, strict=True)) for wr in w] for xr in x]
    assert exact_matmul(x, w.T).astype(np.int64).tolist() == exact
    acc = accumulator_type(x_t, w_t, 1536)
    assert acc.frac == 13 + 15 and acc.width <= 53
    # ties to even, saturation (AP_RND_CONV, AP_SAT)
    t = FixedType(8, 3)
    assert t.codes(np.array([0.5 / 32, 1.5 / 32, 100.0, -100.0])).tolist() == [0, 2, 127, -128]
    with pytest.raises(ValueError):
        accumulator_type(FixedType(32, 4), FixedType(32, 4), 1 << 20)


def test_exact_path_tracks_fake_quantisation(real_cache):
    import numpy as np

    from fitformer.models import load_classifier, load_tokenizer, resolve_model
    from fitformer.models.fixed_point import exact_model

    ref = resolve_model("default")
    torch.manual_seed(0)
    net = load_classifier(ref, ("neg", "pos")).eval()
    tok = load_tokenizer(ref)
    sents = ["a warm, funny film", "tedious and far too long"]
    batch = dict(tok(sents, padding=True, return_tensors="pt"))
    with torch.no_grad():
        cal = calibrate(net, [batch])
        with fixed_point(net, "fx16", cal):
            fake = net(**batch).logits.numpy()
    ex = exact_model(net, "fx16", cal)
    for i, s in enumerate(sents):
        got = ex.logits(np.array(tok(s)["input_ids"]))
        assert got.dtype == np.float32
        # Same grids; only summation order, bias rounding and the non-linear units' ulps
        # differ: far below one fx16 step of the logits.
        assert np.abs(got - fake[i]).max() < 2e-3
        # The fx16 table units (a design's `nonlinear: fx16`) stay close too.
        table = exact_model(net, "fx16", cal, "fx16").logits(np.array(tok(s)["input_ids"]))
        assert np.abs(table - fake[i]).max() < 2e-2
    with pytest.raises(ValueError, match="fp32 or fx16"):
        exact_model(net, "fx16", cal, "fx8")


def test_fx16_table_units_bounds_and_hand_cases():
    """exp, Phi (GELU), tanh and softmax of the fx16 table units: the documented absolute
    bounds on dense grids, and entries and one interpolation computed by hand."""
    import math

    import numpy as np

    from fitformer.models.fixed_point import (
        EXP_FX16_MAX_ERROR,
        EXP_FX16_TABLE,
        PHI_FX16_MAX_ERROR,
        exp_fx16,
        gelu_fx16,
        softmax_fx16,
        tanh_fx16,
    )

    z = np.linspace(-20, 0, 400_001, dtype=np.float32)
    assert np.abs(exp_fx16(z) - np.exp(z.astype(np.float64))).max() <= EXP_FX16_MAX_ERROR
    x = np.linspace(-12, 12, 400_001, dtype=np.float32)
    xd = x.astype(np.float64)
    phi = np.array([0.5 * math.erfc(-v / math.sqrt(2)) for v in xd])
    bound = PHI_FX16_MAX_ERROR * np.abs(xd) + np.spacing(np.abs(x))
    assert (np.abs(gelu_fx16(x) - xd * phi) <= bound).all()
    assert np.abs(tanh_fx16(x) - np.tanh(xd)).max() <= 2 * EXP_FX16_MAX_ERROR
    # By hand: exp(0) = 2**15 / 2**15; z = -1/64 is the table's entry 1,
    # round(exp(-1/64) 2**15) = 32260; z = -1/128 is 16 of the segment's 32 codes:
    # 32768 + ((32260 - 32768) * 16 + 16) >> 5 = 32768 - 254 = 32514.
    assert EXP_FX16_TABLE[1] == 32260
    assert exp_fx16(np.float32([0.0, -1 / 64, -1 / 128, -40.0])).tolist() == \
        [1.0, 32260 / 2 ** 15, 32514 / 2 ** 15, 0.0]
    assert gelu_fx16(np.float32([0.0, 20.0, -20.0])).tolist() == [0.0, 20.0, -0.0]
    s = np.random.default_rng(0).normal(scale=3, size=(4, 64)).astype(np.float32)
    e = np.exp(s - s.max(-1, keepdims=True))
    p = softmax_fx16(s)
    assert np.abs(p - e / e.sum(-1, keepdims=True)).max() <= 2 * EXP_FX16_MAX_ERROR
    # the row sum of the exps is exact, so any summation order gives the same row
    assert np.array_equal(softmax_fx16(s[:, ::-1]), p[:, ::-1])
