"""Inner-product manipulation (Xie, Koyejo & Gupta 2019, "Fall of empires: breaking Byzantine-tolerant SGD
by inner product manipulation"): the malicious clients send -epsilon times the mean honest update, so the
aggregate's inner product with the true descent direction turns negative. A small epsilon (0.1) stays close
enough to the honest updates to pass Krum and median; a large one (10 and up) overwhelms a mean."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import Field

from ...core.registry import register
from ...federated.simulation import Adversary
from .common import FederatedParams, FederatedThreat


def ipm(updates: torch.Tensor, bad: torch.Tensor, epsilon: float) -> torch.Tensor:
    out = updates.clone()
    honest = updates[~bad] if bool((~bad).any()) else updates
    out[bad] = -epsilon * honest.mean(0)
    return out


@dataclass(frozen=True)
class InnerProduct(Adversary):
    malicious: frozenset
    epsilon: float

    def craft(self, updates, weights, bad, info, aggregator):
        return ipm(updates, bad, self.epsilon)


class IpmParams(FederatedParams):
    epsilon: float = Field(0.1, gt=0, description="the malicious update is -epsilon x the honest mean")


@register
class InnerProductManipulation(FederatedThreat):
    """Inner-product manipulation: colluding clients send -epsilon x the honest mean update (Xie et al. 2019)."""
    name = "inner-product-manipulation"
    title = "Inner-product manipulation"
    Params = IpmParams
    what = "Inner-product manipulation"

    def adversary(self, ctx, params, bad):
        return InnerProduct(bad, params.epsilon)
