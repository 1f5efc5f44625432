"""Spectral signatures (Tran, Li & Madry 2018, "Spectral signatures in backdoor attacks", NeurIPS): within
a class, poisoned points differ from clean ones along the top singular vector of the centred
representations. Tran et al. remove the 1.5 eps highest-scoring points of every class for a known bound
eps on the poison; this filter does not assume eps: it splits each class's projections on that vector at
the cut that leaves the least variance within the two sides (Otsu's criterion, exact in one dimension)
and removes the smaller side where the rest of the data does not recognise it (poison_detection.py)."""
from __future__ import annotations

import torch
from ..core.registry import register
from .poison_detection import RepresentationDefense, RepresentationFilter


def best_split(v: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The two-sided cut of a 1-D sample that maximises the between-side variance: (the smaller side's
    mask, the share of the variance the split explains)."""
    order = torch.argsort(v)
    s = v[order]
    n = len(s)
    k = torch.arange(1, n, dtype=s.dtype)
    left = torch.cumsum(s, 0)[:-1]
    total = s.sum()
    between = (left / k - (total - left) / (n - k)) ** 2 * k * (n - k) / n ** 2
    i = int(torch.argmax(between))
    explained = float(between[i] / s.var(unbiased=False).clamp_min(1e-30))
    low = torch.zeros(n, dtype=torch.bool)
    low[order[:i + 1]] = True
    return (low if int(low.sum()) <= n // 2 else ~low), explained


class SpectralFilter(RepresentationFilter):
    def split(self, reps):
        centred = reps - reps.mean(0)
        _, _, vh = torch.linalg.svd(centred, full_matrices=False)
        return best_split(centred @ vh[0])

    def __repr__(self) -> str:
        return f"SpectralFilter(recipe={self.recipe.name}, threshold={self.threshold:g})"


@register
class SpectralSignatures(RepresentationDefense):
    """Spectral signatures (Tran et al. 2018): remove the part of a class that splits off along its top
    singular direction, then retrain."""

    name = "spectral-signatures"
    title = "Spectral-signature poison removal"
    Filter = SpectralFilter
