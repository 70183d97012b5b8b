"""Masks kept outside the weights while training, as ``torch.nn.utils.parametrize``
parametrizations (the mechanism ``torch.ao.pruning`` uses): the module's ``weight`` is
computed as ``original * mask`` on every access, so pruned weights are exactly zero in the
forward pass and receive zero gradient, whatever the optimiser (AdamW's weight decay only
moves ``original``). :func:`squash_masks` writes ``original * mask`` back as a plain
parameter for export.
"""

from __future__ import annotations

import torch
from torch.nn.utils import parametrize


class WeightMask(torch.nn.Module):
    """Parametrization ``W -> W * mask`` with a boolean ``mask`` buffer of ``W``'s shape."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask.to(torch.bool).clone())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


def _module(model: torch.nn.Module, name: str) -> torch.nn.Module:
    return model.get_submodule(name)


def attach_masks(model: torch.nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Apply ``masks`` (module name -> bool tensor of the weight's shape) to ``model``.

    A module that is already masked gets its mask replaced in place.

    Raises:
        ValueError: a mask's shape differs from its weight's.
    """
    for name, mask in masks.items():
        module = _module(model, name)
        if parametrize.is_parametrized(module, "weight"):
            current = module.parametrizations.weight[0]
            if current.mask.shape != mask.shape:
                raise ValueError(f"mask for {name} has shape {tuple(mask.shape)}, weight has "
                                 f"{tuple(current.mask.shape)}")
            current.mask.copy_(mask)
        else:
            if tuple(module.weight.shape) != tuple(mask.shape):
                raise ValueError(f"mask for {name} has shape {tuple(mask.shape)}, weight has "
                                 f"{tuple(module.weight.shape)}")
            parametrize.register_parametrization(module, "weight", WeightMask(mask))


def current_masks(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Module name -> current mask of every masked module."""
    out = {}
    for name, module in model.named_modules():
        if parametrize.is_parametrized(module, "weight"):
            out[name] = module.parametrizations.weight[0].mask.clone()
    return out


def original_weight(module: torch.nn.Module) -> torch.Tensor:
    """The unmasked parameter of a (possibly) masked module."""
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations.weight.original
    return module.weight


def squash_masks(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Remove the parametrizations, leaving ``weight = original * mask`` (pruned = 0.0).

    Returns:
        The masks that were applied.
    """
    masks = current_masks(model)
    for name in masks:
        parametrize.remove_parametrizations(_module(model, name), "weight",
                                            leave_parametrized=True)
    return masks
