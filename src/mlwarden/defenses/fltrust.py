"""FLTrust (Cao, Fang, Liu & Gong 2021, "FLTrust: Byzantine-robust federated learning via trust
bootstrapping"): the server trains on a small clean root set of its own each round; every client update
gets trust ReLU(cos(update, root update)), is rescaled to the root update's norm, and the aggregate is the
trust-weighted mean. The root set here is `root_size` training points drawn with the server's seed."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import Field

from ..core.registry import register
from ..core.threat import Params
from ..federated.aggregate import AggregationDefense, RoundInfo


def fltrust(updates: torch.Tensor, root: torch.Tensor) -> torch.Tensor:
    norms = updates.norm(dim=1).clamp_min(1e-12)
    trust = torch.relu(updates @ root / (norms * root.norm().clamp_min(1e-12)))
    if float(trust.sum()) == 0:
        return torch.zeros_like(root)
    scaled = updates * (root.norm() / norms)[:, None]
    return (trust[:, None] * scaled).sum(0) / trust.sum()


@dataclass(frozen=True)
class FLTrust:
    root_size: int

    def __call__(self, updates, weights, info: RoundInfo):
        return fltrust(updates, info.root_update)


class FLTrustParams(Params):
    root_size: int = Field(100, ge=1, description="clean points the server trains on each round")


@register
class FLTrustDefense(AggregationDefense):
    """FLTrust: client updates weighted by their agreement with the server's own root-set update (Cao et al. 2021)."""
    name = "fltrust"
    title = "FLTrust aggregation"
    Params = FLTrustParams

    def rule(self, params):
        return FLTrust(params.root_size)
