"""Models: loading pretrained Transformers and naming their linear layers."""

from fitformer.models.layers import PRUNABLE_ROLES, ROLES, LinearInfo, linear_layers, role_of
from fitformer.models.loading import (
    DEFAULT_MODEL,
    ModelRef,
    load_classifier,
    load_tokenizer,
    resolve_model,
)

__all__ = [
    "DEFAULT_MODEL", "LinearInfo", "ModelRef", "PRUNABLE_ROLES", "ROLES", "linear_layers",
    "load_classifier", "load_tokenizer", "resolve_model", "role_of",
]
