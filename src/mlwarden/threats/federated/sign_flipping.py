"""Sign flipping and scaling: a malicious client sends its honest update times `scale` (-1 flips it, -10
flips and boosts it); the simplest Byzantine client (Blanchard et al. 2017 use it to show that one such
client controls a mean)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import Field

from ...core.registry import register
from ...federated.simulation import Adversary
from .common import FederatedParams, FederatedThreat


def scaled(updates: torch.Tensor, bad: torch.Tensor, scale: float) -> torch.Tensor:
    out = updates.clone()
    out[bad] = updates[bad] * scale
    return out


@dataclass(frozen=True)
class Scaling(Adversary):
    malicious: frozenset
    scale: float

    def craft(self, updates, weights, bad, info, aggregator):
        return scaled(updates, bad, self.scale)


class SignFlipParams(FederatedParams):
    scale: float = Field(-10.0, description="the malicious update is the honest one times this")


@register
class SignFlipping(FederatedThreat):
    """Malicious clients send their honest update flipped and scaled (x -10 by default)."""
    name = "sign-flipping"
    title = "Sign-flipping and scaling clients"
    Params = SignFlipParams
    what = "A sign-flipped, scaled update"

    def adversary(self, ctx, params, bad):
        return Scaling(bad, params.scale)
