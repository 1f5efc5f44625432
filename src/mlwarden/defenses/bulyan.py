"""Bulyan (El Mhamdi, Guerraoui & Rouault 2018, "The hidden vulnerability of distributed learning in
Byzantium"): Krum picks theta = K - 2f updates one at a time (each pick leaves the pool), then every
coordinate averages the beta = theta - 2f selected values closest to their median. Needs K >= 4f + 3."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import Field

from ..core.registry import register
from ..core.threat import Params
from ..federated.aggregate import PAIRWISE_MOST, AggregationDefense, krum_scores, median_of, scores_from, sq_distances
from .krum import assumed


def bulyan(updates: torch.Tensor, f: int) -> torch.Tensor:
    k = len(updates)
    # Up to PAIRWISE_MOST updates, cdist computes every pair on its own, so the distances among a pool are a
    # block of the full matrix: one matrix serves all K - 2f picks (a fresh cdist per pick cost 7x more).
    dist = sq_distances(updates) if k <= PAIRWISE_MOST else None
    pool = list(range(k))
    chosen = []
    for _ in range(k - 2 * f):
        scores = krum_scores(updates[pool], f) if dist is None else scores_from(dist[pool][:, pool], f)
        chosen.append(pool.pop(int(torch.argmin(scores))))
    sel = updates[chosen]
    beta = len(chosen) - 2 * f
    med = median_of(sel)
    gap = (sel - med).abs()
    if gap.device.type == "cpu" and not gap.requires_grad:   # numpy's stable sort: the same order, 2.5x faster
        import numpy as np
        closest = torch.from_numpy(np.argsort(gap.numpy(), axis=0, kind="stable")[:beta])
    else:
        closest = torch.argsort(gap, dim=0, stable=True)[:beta]
    return torch.gather(sel, 0, closest).mean(0)


@dataclass(frozen=True)
class Bulyan:
    f: int | None

    def __call__(self, updates, weights=None, info=None):
        k = len(updates)
        return bulyan(updates, assumed(self.f, k, (k - 3) // 4))


class BulyanParams(Params):
    f: int | None = Field(None, ge=0, description="attackers the server assumes (default: the most it tolerates)")


@register
class BulyanDefense(AggregationDefense):
    """Bulyan: Krum selection, then a coordinate-wise trimmed mean around the median (El Mhamdi et al. 2018)."""
    name = "bulyan"
    title = "Bulyan aggregation"
    Params = BulyanParams

    def rule(self, params):
        return Bulyan(params.f)
