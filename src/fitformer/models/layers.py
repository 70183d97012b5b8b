"""The linear layers of a Transformer and their roles (design.md §2-§3).

Roles: ``q``, ``k``, ``v`` (attention projections), ``attn_out`` (attention output),
``ffn_in`` / ``ffn_out`` (feed-forward), ``pooler``, ``classifier`` (also an
encoder-decoder's vocabulary projection ``lm_head``, tied to the embeddings); anything else
is ``other``. Encoder-decoders (BART / Marian naming) give their self- and cross-attention
(``encoder_attn``) projections the same four roles. The six roles q, k, v, attn_out,
ffn_in, ffn_out are prunable by default; the pooler and classifier are not. A weight has
shape ``(out_features, in_features)`` = ``(M, N)``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

PRUNABLE_ROLES = ("q", "k", "v", "attn_out", "ffn_in", "ffn_out")
ROLES = (*PRUNABLE_ROLES, "pooler", "classifier", "other")

# First match wins. BERT/RoBERTa/ELECTRA naming, then DistilBERT.
_ROLE_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"attention\.self\.query$", "q"),
    (r"attention\.self\.key$", "k"),
    (r"attention\.self\.value$", "v"),
    (r"attention\.output\.dense$", "attn_out"),
    (r"intermediate\.dense$", "ffn_in"),
    (r"layer\.\d+\.output\.dense$", "ffn_out"),
    (r"attention\.q_lin$", "q"),
    (r"attention\.k_lin$", "k"),
    (r"attention\.v_lin$", "v"),
    (r"attention\.out_lin$", "attn_out"),
    (r"ffn\.lin1$", "ffn_in"),
    (r"ffn\.lin2$", "ffn_out"),
    # BART / Marian encoder-decoders: self- and cross-attention (encoder_attn), FFN.
    (r"(self_attn|encoder_attn)\.q_proj$", "q"),
    (r"(self_attn|encoder_attn)\.k_proj$", "k"),
    (r"(self_attn|encoder_attn)\.v_proj$", "v"),
    (r"(self_attn|encoder_attn)\.out_proj$", "attn_out"),
    (r"layers\.\d+\.fc1$", "ffn_in"),
    (r"layers\.\d+\.fc2$", "ffn_out"),
    (r"(^|\.)lm_head$", "classifier"),
    (r"(^|\.)pooler\.dense$", "pooler"),
    (r"(^|\.)pre_classifier$", "pooler"),
    (r"(^|\.)classifier(\.out_proj|\.dense)?$", "classifier"),
)
_LAYER_INDEX = re.compile(r"(?:layer|layers|h|block)\.(\d+)\.")


@dataclass(frozen=True)
class LinearInfo:
    """One ``nn.Linear`` of a model.

    Attributes:
        name: module path (``bert.encoder.layer.0.attention.self.query``).
        role: one of :data:`ROLES`.
        layer: encoder layer index, or ``None`` outside the layer stack.
        out_features, in_features: ``M`` and ``N`` of the weight ``(M, N)``.
        prunable: pruned by default (role in :data:`PRUNABLE_ROLES`).
    """

    name: str
    role: str
    layer: int | None
    out_features: int
    in_features: int
    prunable: bool

    @property
    def shape(self) -> tuple[int, int]:
        return (self.out_features, self.in_features)

    @property
    def parameters(self) -> int:
        return self.out_features * self.in_features


def role_of(name: str) -> str:
    """The role of a linear layer from its module path (see :data:`ROLES`)."""
    for pattern, role in _ROLE_PATTERNS:
        if re.search(pattern, name):
            return role
    return "other"


def stack_of(name: str) -> str:
    """Which stack of an encoder-decoder a linear layer belongs to: ``cross`` (the
    decoder's cross-attention, ``encoder_attn``), ``decoder`` (its self-attention, FFN and
    the vocabulary projection ``lm_head``) or ``encoder`` (everything else, and every layer
    of an encoder-only model)."""
    if "encoder_attn." in name + ".":
        return "cross"
    if re.search(r"(^|\.)decoder\.", name) or re.search(r"(^|\.)lm_head$", name):
        return "decoder"
    return "encoder"


def layer_index(name: str) -> int | None:
    """The encoder layer index in a module path (``...layer.3.attention...`` -> 3), or
    ``None`` outside the layer stack."""
    m = _LAYER_INDEX.search(name + ".")
    return int(m.group(1)) if m else None


def linear_layers(model: torch.nn.Module) -> list[LinearInfo]:
    """Every ``nn.Linear`` of ``model`` in module order, with role and default prunability."""
    out = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            role = role_of(name)
            out.append(LinearInfo(name, role, layer_index(name),
                                  module.out_features, module.in_features,
                                  role in PRUNABLE_ROLES))
    return out
