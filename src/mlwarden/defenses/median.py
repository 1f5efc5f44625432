"""Coordinate-wise median aggregation (Yin, Chen, Ramchandran & Bartlett 2018, "Byzantine-robust distributed
learning: towards optimal statistical rates"): every parameter takes the median of the clients' values."""
from __future__ import annotations

from ..core.registry import register
from ..core.threat import Params
from ..federated.aggregate import AggregationDefense, median_of


def median(updates, weights=None, info=None):
    """The coordinate-wise median of the updates (example counts are ignored)."""
    return median_of(updates)


@register
class MedianDefense(AggregationDefense):
    """Coordinate-wise median of the clients' updates (Yin et al. 2018)."""
    name = "median"
    title = "coordinate-wise median aggregation"
    Params = Params

    def rule(self, params):
        return median
