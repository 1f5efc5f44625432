"""Label flipping by malicious clients (Tolpegin, Truex, Gursoy & Liu 2020, "Data poisoning attacks against
federated learning systems"): they train honestly on their own data with every label y replaced by
C - 1 - y, so their updates look like honest ones and pull the global model towards the wrong classes."""
from __future__ import annotations

from dataclasses import dataclass

from ...core.registry import register
from ...federated.simulation import Adversary
from .common import FederatedParams, FederatedThreat


@dataclass(frozen=True)
class LabelFlip(Adversary):
    malicious: frozenset
    n_classes: int

    def poison(self, cid, x, y, recipe, seed):
        return x, self.n_classes - 1 - y, recipe


@register
class ClientLabelFlipping(FederatedThreat):
    """Malicious clients train on their data with flipped labels (y -> C - 1 - y)."""
    name = "client-label-flipping"
    title = "Label-flipping clients"
    Params = FederatedParams
    what = "Label flipping"

    def adversary(self, ctx, params, bad):
        return LabelFlip(bad, ctx.data.n_classes)
