"""The HP container: exact rebuild from a real pruned run, and fuzzed corruption."""

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fitformer.errors import FitformerError
from fitformer.formats.container import (
    decode_values,
    encode_values,
    pack_uint,
    read_container,
    unpack_uint,
)
from fitformer.formats.export import compare_with_run, export_run


@given(width=st.integers(1, 33), data=st.data())
def test_bit_packing_round_trip(width, data):
    vals = np.array(data.draw(st.lists(st.integers(0, 2**width - 1), max_size=50)), np.uint64)
    assert np.array_equal(unpack_uint(pack_uint(vals, width), len(vals), width), vals)


def test_fixed_point_codes_round_trip():
    x = np.array([0.0, 0.5, -0.25, 1.98, -2.0], np.float32)
    for prec, ib in (("fx16", 2), ("fx8", 2)):
        codes, width = encode_values(x, prec, ib)
        assert codes.max() < 2 ** width
        y = decode_values(codes, prec, ib)
        step = 2.0 ** (ib - width)
        assert np.allclose(y, np.clip(np.round(x / step) * step, -2, 2 - step))
    codes, width = encode_values(x, "fp32", None)
    assert width == 32 and np.array_equal(decode_values(codes, "fp32", None), x)


@pytest.mark.parametrize("precision", ["fp32", "fx16", "fx8"])
def test_export_load_gives_the_same_logits(tiny_hp_run, tmp_path, precision):
    _, run = tiny_hp_run
    out = tmp_path / f"model-{precision}.fitf"
    header = export_run(run.path, out, precision)
    assert header["value_dtype"] == precision and len(header["layers"]) == 36
    c = read_container(out)
    result = compare_with_run(c, run.path, ["a moving, funny film", "dull", "not bad at all"])
    assert result["equal"] and result["masks_equal"], result


@pytest.fixture
def small_container(tmp_path):
    """A small but complete container (two HP layers, other tensors, a tokenizer file), so
    that hundreds of corrupted copies can be tried quickly."""
    import torch

    from fitformer.formats.container import write_container
    from fitformer.sparsity.patterns import make_pattern

    g = torch.Generator().manual_seed(0)
    layers = {}
    for name, shape in (("enc.q", (32, 32)), ("enc.ffn", (64, 32))):
        w = torch.randn(*shape, generator=g)
        layers[name] = (w, make_pattern("hp").mask(w, 0.75))
    out = tmp_path / "m.fitf"
    write_container(out, config={"model_type": "bert"}, layers=layers,
                    other_tensors={"enc.q.bias": torch.zeros(32)},
                    files={"vocab.txt": b"[PAD]\n[UNK]\n"}, precision="fx8", block=(16, 16),
                    banks=4, pattern_params={"r": 16, "c": 16, "B": 4}, source="test")
    c = read_container(out)
    w, m = c.weight("enc.ffn")
    assert np.array_equal(m, layers["enc.ffn"][1].numpy())
    return out


def test_container_rejects_truncation_bit_flips_and_versions(small_container, tmp_path):
    data = small_container.read_bytes()
    bad = tmp_path / "bad.fitf"

    @settings(max_examples=150, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(cut=st.integers(0, len(data) - 1))
    def truncated(cut):
        bad.write_bytes(data[:cut])
        with pytest.raises(FitformerError, match="not a valid HP container"):
            read_container(bad)

    @settings(max_examples=300, deadline=None)
    @given(pos=st.integers(0, len(data) - 1), bit=st.integers(0, 7))
    def flipped(pos, bit):
        b = bytearray(data)
        b[pos] ^= 1 << bit
        bad.write_bytes(bytes(b))
        with pytest.raises(FitformerError):
            read_container(bad)

    truncated()
    flipped()
    b = bytearray(data)
    struct.pack_into("<H", b, 8, 99)
    bad.write_bytes(bytes(b))
    with pytest.raises(FitformerError, match="version 99.*reads version 1"):
        read_container(bad)
    with pytest.raises(FitformerError, match="does not exist"):
        read_container(tmp_path / "missing.fitf")


def test_export_refuses_a_dense_run(in_tiny_home, tmp_path):
    _, dense = in_tiny_home
    with pytest.raises(FitformerError, match="not a pruned run"):
        export_run(dense.path, tmp_path / "x.fitf")


def test_edited_header_with_recomputed_checksums_is_refused(small_container, tmp_path):
    import hashlib
    import json

    from fitformer.formats.container import _PREFIX

    data = small_container.read_bytes()
    _, version, hlen = _PREFIX.unpack_from(data)
    header = json.loads(data[_PREFIX.size:_PREFIX.size + hlen])
    payload = data[_PREFIX.size + hlen:-32]
    edits = [
        lambda h: h.update(value_dtype="fx4"),
        lambda h: h["layers"]["enc.q"].update(B=0),
        lambda h: h["layers"]["enc.q"].update(padded=[1 << 40, 32]),
        lambda h: h["layers"]["enc.q"]["widths"].update(block_row=0),
        lambda h: h["layers"]["enc.q"].update(I=10**9),
        lambda h: h.update(config="bert"),
        lambda h: h.update(sections=[s for s in h["sections"] if s["name"] != "tensors"]),
    ]
    for i, edit in enumerate(edits):
        h = json.loads(json.dumps(header))
        edit(h)
        blob = json.dumps(h).encode()
        body = _PREFIX.pack(b"FITFHP\r\n", version, len(blob)) + blob + payload
        bad = tmp_path / f"edit{i}.fitf"
        bad.write_bytes(body + hashlib.sha256(body).digest())
        with pytest.raises(FitformerError, match="not a valid HP container"):
            read_container(bad)
