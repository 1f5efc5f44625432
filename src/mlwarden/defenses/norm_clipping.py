"""Norm clipping (Sun, Kairouz, Suresh & McMahan 2019, "Can you really backdoor federated learning?"): every
update longer than a bound is scaled down to it, then FedAvg. The bound is the median norm of the round's
updates times `factor` (the honest majority sets it; nothing about the attack is assumed), or a fixed
`bound` when given."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import Field

from ..core.registry import register
from ..core.threat import Params
from ..federated.aggregate import AggregationDefense, fedavg


def clip_norms(updates: torch.Tensor, bound: float) -> torch.Tensor:
    norms = updates.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return updates * torch.clamp(bound / norms, max=1.0)


@dataclass(frozen=True)
class NormClipping:
    factor: float
    bound: float | None

    def __call__(self, updates, weights, info=None):
        bound = self.bound if self.bound is not None else self.factor * float(updates.norm(dim=1).median())
        return fedavg(clip_norms(updates, bound), weights)


class NormClippingParams(Params):
    factor: float = Field(1.0, gt=0, description="bound = factor x the round's median update norm")
    bound: float | None = Field(None, gt=0, description="a fixed L2 bound instead of the median rule")


@register
class NormClippingDefense(AggregationDefense):
    """Norm clipping: updates longer than the round's median norm are scaled down to it, then FedAvg (Sun et al. 2019)."""
    name = "norm-clipping"
    title = "norm clipping of client updates"
    Params = NormClippingParams

    def rule(self, params):
        return NormClipping(params.factor, params.bound)
