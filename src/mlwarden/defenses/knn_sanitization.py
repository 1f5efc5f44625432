"""k-NN label sanitization (Paudice, Munoz-Gonzalez & Lupu 2018, "Label sanitization against label flipping
poisoning attacks", ECML PKDD workshops): every training point whose k nearest neighbours (Euclidean, in
input space) agree on a label in at least a share eta of cases takes that label. Flipped labels inside a
clean neighbourhood are restored; points near the class boundary, where neighbours disagree, keep theirs."""
from __future__ import annotations

import torch
from pydantic import Field

from ..core.registry import register
from ..core.threat import Params
from .sanitizer import Sanitizer, SanitizerDefense, flat


def knn_relabel(x: torch.Tensor, y: torch.Tensor, k: int, eta: float, chunk: int = 2048) -> torch.Tensor:
    """Labels after sanitization: the neighbours' majority label where its share is at least eta."""
    z = flat(x)
    out = y.clone()
    for i in range(0, len(z), chunk):
        d = torch.cdist(z[i:i + chunk], z)
        d[torch.arange(d.shape[0]), torch.arange(i, i + d.shape[0])] = float("inf")   # not its own neighbour
        nb = y[d.topk(k, largest=False).indices]
        major = torch.mode(nb, 1).values
        share = (nb == major[:, None]).float().mean(1)
        out[i:i + chunk] = torch.where(share >= eta, major, y[i:i + chunk])
    return out


class KnnSanitizer(Sanitizer):
    removes, relabels = False, True

    def __init__(self, k: int, eta: float):
        self.k, self.eta = k, eta

    def sanitize(self, x, y):
        return torch.ones(len(y), dtype=torch.bool), knn_relabel(x, y, self.k, self.eta)

    def __repr__(self) -> str:
        return f"KnnSanitizer(k={self.k}, eta={self.eta:g})"


class KnnParams(Params):
    k: int = Field(10, ge=1, le=100, description="neighbours consulted")
    eta: float = Field(0.5, gt=0, le=1, description="share of neighbours that must agree to relabel")


@register
class KnnLabelSanitization(SanitizerDefense):
    """k-NN label sanitization (Paudice et al. 2018): a point takes its neighbours' clear majority label."""

    name = "knn-label-sanitization"
    title = "k-NN label sanitization"
    Params = KnnParams
    sweepable = ("k", "eta")

    def make(self, p: KnnParams, data, recipe) -> KnnSanitizer:
        return KnnSanitizer(p.k, p.eta)
