"""Coordinate-wise trimmed mean (Yin, Chen, Ramchandran & Bartlett 2018): every parameter drops the
int(beta * K) largest and smallest of the K clients' values and averages the rest."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import Field

from ..core.errors import UserError
from ..core.registry import register
from ..core.threat import Params


from ..federated.aggregate import AggregationDefense


def trimmed_mean(updates: torch.Tensor, beta: float) -> torch.Tensor:
    k = len(updates)
    cut = int(beta * k)
    if 2 * cut >= k:
        raise UserError(f"trimmed mean with beta {beta:g} drops all {k} updates of a round")
    if cut == 0:
        return updates.mean(0)
    top = updates.topk(cut, 0).values.sum(0)                  # the cut largest and smallest of each coordinate
    bottom = updates.topk(cut, 0, largest=False).values.sum(0)
    return (updates.sum(0) - top - bottom) / (k - 2 * cut)


@dataclass(frozen=True)
class TrimmedMean:
    beta: float

    def __call__(self, updates, weights=None, info=None):
        return trimmed_mean(updates, self.beta)


class TrimmedMeanParams(Params):
    beta: float = Field(0.2, ge=0, lt=0.5, description="fraction trimmed from each end, per coordinate")


@register
class TrimmedMeanDefense(AggregationDefense):
    """Coordinate-wise trimmed mean of the clients' updates (Yin et al. 2018)."""
    name = "trimmed-mean"
    title = "coordinate-wise trimmed mean aggregation"
    Params = TrimmedMeanParams

    def rule(self, params):
        return TrimmedMean(params.beta)
