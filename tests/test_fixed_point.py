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
