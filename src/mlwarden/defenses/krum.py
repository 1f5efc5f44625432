"""Krum and Multi-Krum (Blanchard, El Mhamdi, Guerraoui & Stainer 2017, "Machine learning with adversaries:
Byzantine tolerant gradient descent"): each update is scored by the sum of squared distances to its
K - f - 2 nearest other updates; Krum takes the best-scored update, Multi-Krum the weighted mean of the m
best (m = K - f unless given). f is the number of attackers the server assumes; Krum needs K > 2f + 2."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import Field

from ..core.errors import UserError
from ..core.registry import register
from ..core.threat import Params
from ..federated.aggregate import AggregationDefense, RoundInfo, krum_scores


def krum(updates: torch.Tensor, weights: torch.Tensor, f: int, keep: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(aggregate, indices chosen): the best-scored update (keep 1) or the weighted mean of the `keep` best."""
    chosen = torch.argsort(krum_scores(updates, f), stable=True)[:keep]
    w = weights[chosen].to(updates.dtype)
    return (w @ updates[chosen]) / w.sum(), chosen


def assumed(f: int | None, k: int, most: int) -> int:
    """The f the server assumes: as given, or the most the rule tolerates with k clients."""
    f = most if f is None else f
    if f < 0 or f > most:
        raise UserError(f"f = {f} attackers is more than this rule tolerates with {k} clients per round "
                        f"(at most {max(most, 0)})")
    return f


class KrumParams(Params):
    f: int | None = Field(None, ge=0, description="attackers the server assumes (default: the most it tolerates)")


class MultiKrumParams(KrumParams):
    keep: int | None = Field(None, ge=1, description="updates averaged (default: K - f)")


@dataclass(frozen=True)
class KrumRule:
    f: int | None
    keep: int | None    # None: K - f (Multi-Krum's default)

    def __call__(self, updates, weights, info: RoundInfo | None = None):
        k = len(updates)
        f = assumed(self.f, k, (k - 3) // 2)
        return krum(updates, weights, f, min(self.keep or k - f, k))[0]


@register
class KrumDefense(AggregationDefense):
    """Krum: the server keeps the one update closest to its neighbours (Blanchard et al. 2017)."""
    name = "krum"
    title = "Krum aggregation"
    Params = KrumParams

    def rule(self, params):
        return KrumRule(params.f, 1)


@register
class MultiKrumDefense(AggregationDefense):
    """Multi-Krum: the mean of the m updates closest to their neighbours (Blanchard et al. 2017)."""
    name = "multi-krum"
    title = "Multi-Krum aggregation"
    Params = MultiKrumParams

    def rule(self, params):
        return KrumRule(params.f, params.keep)
