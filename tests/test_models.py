from collections import Counter

import pytest
import torch

from fitformer.errors import FitformerError
from fitformer.models import linear_layers, load_classifier, load_tokenizer, resolve_model
from fitformer.models.layers import role_of


@pytest.fixture(scope="module")
def minilm(real_cache):
    ref = resolve_model("default")
    return ref, load_classifier(ref, ("neg", "pos"))


def test_default_model_is_minilm_with_roles(minilm):
    ref, net = minilm
    assert ref.id == "sentence-transformers/all-MiniLM-L6-v2"
    cfg = net.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads) == (6, 384, 12)
    assert round(sum(p.numel() for p in net.parameters()) / 1e6, 1) == 22.7
    layers = linear_layers(net)
    roles = Counter(i.role for i in layers)
    assert roles == {"q": 6, "k": 6, "v": 6, "attn_out": 6, "ffn_in": 6, "ffn_out": 6,
                     "pooler": 1, "classifier": 1}
    shapes = {i.role: i.shape for i in layers}
    assert shapes["ffn_in"] == (1536, 384) and shapes["ffn_out"] == (384, 1536)
    assert shapes["classifier"] == (2, 384)
    assert [i.layer for i in layers if i.role == "q"] == list(range(6))
    assert {i.role for i in layers if i.prunable} == {"q", "k", "v", "attn_out", "ffn_in",
                                                      "ffn_out"}


def test_pretrained_encoder_weights_are_loaded_not_random(minilm, real_cache):
    from safetensors import safe_open

    _, net = minilm
    path = real_cache / "models" / "all-MiniLM-L6-v2" / "model.safetensors"
    with safe_open(str(path), "pt") as f:
        ref = f.get_tensor("encoder.layer.3.intermediate.dense.weight")
    assert torch.equal(net.bert.encoder.layer[3].intermediate.dense.weight, ref)


def test_save_pretrained_round_trip(minilm, tmp_path):
    ref, net = minilm
    net.save_pretrained(tmp_path / "m")
    load_tokenizer(ref).save_pretrained(tmp_path / "m")
    ref2 = resolve_model(str(tmp_path / "m"))
    again = load_classifier(ref2)
    tok = load_tokenizer(ref2)
    batch = tok(["a fine film", "dull"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(net(**batch).logits, again(**batch).logits)


def test_corrupt_safetensors_is_a_user_error(minilm, tmp_path):
    ref, net = minilm
    net.save_pretrained(tmp_path / "m")
    st = tmp_path / "m" / "model.safetensors"
    st.write_bytes(st.read_bytes()[:1000])
    with pytest.raises(FitformerError, match=r"model.safetensors is corrupt"):
        resolve_model(str(tmp_path / "m"))


@pytest.mark.parametrize("name,role", [
    ("bert.encoder.layer.11.attention.self.query", "q"),
    ("bert.encoder.layer.0.attention.output.dense", "attn_out"),
    ("bert.encoder.layer.2.output.dense", "ffn_out"),
    ("distilbert.transformer.layer.1.ffn.lin1", "ffn_in"),
    ("pre_classifier", "pooler"),
    ("classifier.out_proj", "classifier"),
    ("lm_head.decoder", "other"),
])
def test_role_names(name, role):
    assert role_of(name) == role


def test_weights_of_another_model_are_refused(minilm, tmp_path):
    from safetensors.torch import save_file

    ref, net = minilm
    net.save_pretrained(tmp_path / "m")
    save_file({"foo": torch.zeros(3)}, str(tmp_path / "m" / "model.safetensors"))
    with pytest.raises(FitformerError, match="lack .* tensors"):
        load_classifier(resolve_model(str(tmp_path / "m")))
