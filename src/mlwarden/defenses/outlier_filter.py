"""Sphere and slab outlier filters per class (Steinhardt, Koh & Liang 2017, "Certified defenses for data
poisoning attacks", NeurIPS): a training point is removed when it lies far from its own class's centroid
(sphere: Euclidean distance) or far along the line between its class's centroid and the others' (slab:
|<x - mu_y, mu_y - mu_rest>|). The cut-offs are per class quantiles: `remove` of each class's points,
the farthest, go. Poisons placed inside both (Koh, Steinhardt & Liang 2018) pass; the label-flipping
threat's adaptive flips do exactly that."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ..core.registry import register
from ..core.threat import Params
from .sanitizer import Sanitizer, SanitizerDefense, flat


def outlier_scores(x: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """Each point's distance from its class under the sphere or the slab rule (labels as given: a flipped
    point is judged as a member of its new class)."""
    z = flat(x)
    scores = torch.zeros(len(y))
    classes = torch.unique(y)
    for c in classes:
        own = y == c
        mu = z[own].mean(0)
        if kind == "sphere":
            scores[own] = (z[own] - mu).norm(dim=1)
        else:
            rest = z[~own].mean(0) if bool((~own).any()) else torch.zeros_like(mu)
            direction = mu - rest
            scores[own] = ((z[own] - mu) @ direction).abs() / direction.norm().clamp_min(1e-12)
    return scores


class OutlierFilter(Sanitizer):
    def __init__(self, kind: str, remove: float):
        self.kind, self.remove = kind, remove

    def sanitize(self, x, y):
        s = outlier_scores(x, y, self.kind)
        keep = torch.ones(len(y), dtype=torch.bool)
        for c in torch.unique(y):
            own = torch.nonzero(y == c).flatten()
            cut = torch.quantile(s[own], 1 - self.remove)
            keep[own[s[own] > cut]] = False
        return keep, y

    def __repr__(self) -> str:
        return f"OutlierFilter({self.kind}, remove={self.remove:g})"


class OutlierParams(Params):
    rule: Literal["sphere", "slab"] = "sphere"
    remove: float = Field(0.1, gt=0, lt=0.5, description="share of each class's points removed, the farthest")


@register
class OutlierFiltering(SanitizerDefense):
    """Sphere or slab outlier filter per class (Steinhardt, Koh & Liang 2017)."""

    name = "outlier-filter"
    title = "Sphere/slab outlier filter per class"
    Params = OutlierParams
    sweepable = ("remove",)

    def make(self, p: OutlierParams, data, recipe) -> OutlierFilter:
        return OutlierFilter(p.rule, p.remove)
