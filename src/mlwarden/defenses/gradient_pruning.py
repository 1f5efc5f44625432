"""Gradient pruning (Zhu, Liu & Han 2019, "Deep leakage from gradients", section 5): each client zeroes the
`ratio` of its update's entries with the smallest magnitude before sending it. Zhu et al. found DLG fails
beyond about 20% pruned; the analytic attack still reads the surviving entries. Its cost is measured by
retraining the federation (harden)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import Field

from ..core.errors import UserError
from ..core.registry import register
from ..core.threat import Params
from ..core.defense import Defense

LEAKAGE = ("idlg", "dlg", "analytic-fc", "inverting-gradients")


def prune(vec: torch.Tensor, ratio: float) -> torch.Tensor:
    k = int(ratio * vec.numel())
    if k == 0:
        return vec
    cut = vec.abs().kthvalue(k).values
    return torch.where(vec.abs() > cut, vec, torch.zeros_like(vec))


@dataclass(frozen=True)
class Prune:
    ratio: float

    def __call__(self, vec, generator=None):
        return prune(vec, self.ratio)


class PruningParams(Params):
    ratio: float = Field(0.9, ge=0, lt=1, description="share of each update's entries set to zero (smallest first)")


def with_transform(recipe, transform, name: str):
    if not getattr(recipe, "federated", False):
        raise UserError(f"{name} changes what federated clients send: it hardens a federation (--federated)")
    return recipe.with_(update_transforms=(*recipe.update_transforms, transform))


@register
class GradientPruningDefense(Defense):
    """Gradient pruning: clients send only the largest entries of their update (Zhu et al. 2019)."""
    name = "gradient-pruning"
    title = "gradient pruning of client updates"
    kind = "training"
    mitigates = LEAKAGE
    modalities = ("image", "tabular")
    Params = PruningParams
    sweepable = ("ratio",)

    def defend_recipe(self, recipe, params, data):
        return with_transform(recipe, Prune(params.ratio), self.name), {"ratio": params.ratio}
