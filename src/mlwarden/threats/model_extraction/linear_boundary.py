"""Label-only extraction of a binary linear classifier (a linear SVM, a logistic regression) by line search
to its decision boundary (Lowd & Meek 2005, "Adversarial learning", KDD; the line-search attack of Tramer et
al. 2016, section 4.2 and 6.1).

Threat model: the API answers labels only (scores: equation solving needs just d + 1 queries). The
attacker finds one input of each class (from its own population data), then, between random pairs of
differently labelled points, binary-searches along the line to the boundary: each search ends on a point of
the separating hyperplane to within the search's precision. The hyperplane through these points (the
direction of least spread of their cloud, by SVD) is the model's, up to scale; its side is fixed by a
point whose label is known. Cost: `points` x `steps` label queries, which the report puts beside Lowd and
Meek's bound ((d + 1) boundary points at log2(1/epsilon) queries each) and Tramer et al.'s budgets (a
multiple alpha of the d + 1 parameters). Binary models only; a multi-class model is reported as skipped."""
from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import Field

from ...core.finding import Metric, Severity, Status
from ...core.registry import register
from ...core.target import Access
from ...core.threat import Context, Params
from .common import DETECTOR_BLIND_SPOT, ExtractionThreat, population, report_copy
from .equation_solving import as_model


class LinearBoundaryParams(Params):
    points: int | None = Field(None, ge=2, description="boundary points to find (unset: 2 (d + 1))")
    steps: int = Field(20, ge=4, le=50, description="binary-search steps per boundary point")
    n_uniform: int = Field(10_000, ge=100)


def boundary_points(labels, x_pos: torch.Tensor, x_neg: torch.Tensor, n: int, steps: int, low: float,
                    high: float, seed: int) -> torch.Tensor:
    """n points on the boundary between label-1 and label-0 inputs: each between a random positive and a
    random negative point (each nudged at random inside the input range, so the lines spread over the
    boundary), binary-searched for `steps` steps, all n searches batched in one query per step."""
    g = torch.Generator().manual_seed(seed)
    a = x_pos[torch.randint(len(x_pos), (n,), generator=g)]
    b = x_neg[torch.randint(len(x_neg), (n,), generator=g)]
    w = (high - low) * 0.1
    a2 = (a + w * (torch.rand(a.shape, generator=g) - 0.5)).clamp(low, high)
    b2 = (b + w * (torch.rand(b.shape, generator=g) - 0.5)).clamp(low, high)
    ya, yb = labels(a2), labels(b2)            # a nudged end may have crossed: keep the original there
    a = torch.where((ya == 1).reshape(-1, *[1] * (a.ndim - 1)), a2, a)
    b = torch.where((yb == 0).reshape(-1, *[1] * (b.ndim - 1)), b2, b)
    for _ in range(steps):
        mid = (a + b) / 2
        pos = (labels(mid) == 1).reshape(-1, *[1] * (a.ndim - 1))
        a, b = torch.where(pos, mid, a), torch.where(pos, b, mid)
    return (a + b) / 2


def fit_hyperplane(points: np.ndarray, x_pos: np.ndarray) -> tuple[np.ndarray, float]:
    """(w, b) of the hyperplane through the points (least spread direction), oriented so w.x + b > 0 on the
    positive side."""
    mu = points.mean(0)
    _, _, vt = np.linalg.svd(points - mu, full_matrices=False)
    w = vt[-1]
    b = -float(w @ mu)
    if float(np.median(x_pos @ w + b)) < 0:
        w, b = -w, -b
    return w, b


@register
class LinearBoundary(ExtractionThreat):
    """Lowd & Meek 2005 line search: a binary linear classifier copied from labels alone."""
    name = "extract-linear-boundary"
    title = "Model extraction of a linear classifier from labels (line search to the boundary)"
    needs = Access.LABELS
    Params = LinearBoundaryParams

    def run(self, ctx: Context, p: LinearBoundaryParams):
        if ctx.data.n_classes != 2:
            return self.finding(ctx, p, status=Status.SKIPPED, severity=Severity.INFO,
                                headline=f"skipped: line search copies binary linear classifiers; this model has "
                                         f"{ctx.data.n_classes} classes")
        s, shape = ctx.data.space, ctx.data.input_shape
        d = int(np.prod(shape))
        n = p.points or 2 * (d + 1)
        q0 = ctx.target.queries
        pool = population(ctx)[:200]
        y = ctx.target.labels(pool)
        if len(torch.unique(y)) < 2:
            return self.finding(ctx, p, status=Status.SKIPPED, severity=Severity.INFO,   # a constant model
                                headline="skipped: every population point got the same label, so there is no "
                                         "boundary to search (a model that answers one class is copied by that "
                                         "answer)")
        x_pos, x_neg = pool[y == 1], pool[y == 0]
        pts = boundary_points(ctx.target.labels, x_pos, x_neg, n, p.steps, s.low, s.high, ctx.seed)
        flat = pts.reshape(n, -1).double().numpy()
        w, b = fit_hyperplane(flat, x_pos.reshape(len(x_pos), -1).double().numpy())
        stolen = as_model(np.stack([np.zeros(d), w]), np.array([0.0, b]), shape)
        queries = ctx.target.queries - q0
        eps = (s.high - s.low) * 2.0 ** -p.steps
        lowd_meek = (d + 1) * math.ceil(math.log2((s.high - s.low) / eps))
        f = report_copy(self, ctx, p, stolen, queries, torch.zeros(1, dtype=torch.long), "linear-boundary.pt",
                        {"boundary_points": n, "lowd_meek_bound": lowd_meek, "alpha": queries / (d + 1)},
                        notes=[f"{n} boundary points, {p.steps} bisections each (precision {eps:.2g} of the range). "
                               f"Lowd & Meek's bound at this precision: (d + 1) x log2(1/eps) = {lowd_meek} queries; "
                               f"Tramer et al. state budgets as alpha x (d + 1) parameters: here alpha = "
                               f"{queries / (d + 1):.1f}.", DETECTOR_BLIND_SPOT])
        f.metrics.append(Metric("Lowd-Meek bound at this precision", lowd_meek, unit="queries"))
        return f
