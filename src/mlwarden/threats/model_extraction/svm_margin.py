"""Extraction of a kernel SVM by retraining on adaptive queries near the margin (Tramer et al. 2016,
"Stealing Machine Learning Models via Prediction APIs", section 5, adaptive retraining; the
active-learning view of Cohn, Atlas & Ladner 1994).

Threat model: the API answers labels (scores are not needed). The attacker trains an RBF-kernel SVM copy
on the answers: first on `initial` queries (its own population data and uniform inputs), then for
`rounds` rounds on the candidates its current copy is least sure about (smallest absolute margin), which
sit on the victim's boundary where the copy is still wrong. The report gives the copy's agreement after
every round against the queries spent, so the curve shows what each query bought."""
from __future__ import annotations

import numpy as np
import torch
from pydantic import Field

from ...core.finding import Metric, Severity, Status
from ...core.registry import register
from ...core.target import Access
from ...core.threat import Context, Params
from .common import DETECTOR_BLIND_SPOT, ExtractionThreat, agreement, population, report_copy, uniform_inputs


class SvmMarginParams(Params):
    initial: int = Field(200, ge=10, description="first queries: half population data, half uniform")
    rounds: int = Field(8, ge=1, le=100)
    per_round: int = Field(100, ge=1, description="queries per round, the least certain candidates")
    candidates: int = Field(5000, ge=100, description="uniform and population candidates to choose from")
    C: float = Field(100.0, gt=0, description="the copy's SVM regularisation (large: fit the answers)")
    n_uniform: int = Field(10_000, ge=100)


class SvmCopy(torch.nn.Module):
    """A fitted scikit-learn SVC as a module returning one-hot logits (for the agreement measurement)."""

    def __init__(self, svc, n_classes: int):
        super().__init__()
        self.svc, self.n_classes = svc, n_classes
        for name, value in (("support_vectors", svc.support_vectors_), ("dual_coef", svc.dual_coef_),
                            ("intercept", svc.intercept_), ("gamma", np.array([svc._gamma]))):
            self.register_buffer(name, torch.from_numpy(np.asarray(value, dtype=np.float32)))   # the evidence

    def forward(self, x):
        pred = self.svc.predict(x.reshape(len(x), -1).detach().cpu().numpy())
        return torch.nn.functional.one_hot(torch.as_tensor(pred, dtype=torch.long), self.n_classes).float()


def margin_retraining(labels, pool: torch.Tensor, cand: torch.Tensor, p: SvmMarginParams, n_classes: int,
                      on_round=None):
    """The copy, its training queries and answers; on_round(copy, n_queries) after each fit."""
    from sklearn.svm import SVC
    flat = lambda t: t.reshape(len(t), -1).numpy()  # noqa: E731
    x = pool[:p.initial]
    y = labels(x).long()
    taken = np.zeros(len(cand), dtype=bool)
    svc = None
    for r in range(p.rounds + 1):
        if len(torch.unique(y)) < 2:   # one class so far: widen with the next candidates before fitting
            pick = np.flatnonzero(~taken)[:p.per_round]
        else:
            svc = SVC(kernel="rbf", C=p.C, gamma="scale").fit(flat(x), y.numpy())
            if on_round is not None:
                on_round(SvmCopy(svc, n_classes), len(x))
            if r == p.rounds:
                break
            m = svc.decision_function(flat(cand))
            certainty = np.abs(m) if m.ndim == 1 else np.sort(m, 1)[:, -1] - np.sort(m, 1)[:, -2]
            certainty[taken] = np.inf
            pick = np.argsort(certainty)[:p.per_round]
        taken[pick] = True
        x = torch.cat([x, cand[pick]])
        y = torch.cat([y, labels(cand[pick]).long()])
    return (SvmCopy(svc, n_classes) if svc is not None else None), x, y


@register
class SvmMargin(ExtractionThreat):
    """Tramer et al. 2016 adaptive retraining of an RBF-kernel SVM copy, from labels near the margin."""
    name = "extract-svm-margin"
    title = "Model extraction of a kernel SVM by adaptive queries near the margin"
    needs = Access.LABELS
    Params = SvmMarginParams

    def run(self, ctx: Context, p: SvmMarginParams):
        s, shape = ctx.data.space, ctx.data.input_shape
        own = population(ctx)
        half = p.initial // 2
        g = torch.Generator().manual_seed(ctx.seed)
        pool = torch.cat([own[torch.randperm(len(own), generator=g)[:half]],
                          uniform_inputs(p.initial - min(half, len(own)), shape, s.low, s.high, ctx.seed)])
        cand = torch.cat([own, uniform_inputs(p.candidates, shape, s.low, s.high, ctx.seed + 1)])
        q0 = ctx.target.queries
        curve = []

        def measure(copy, n):
            a = agreement(ctx.target, copy, ctx.data.x_test, min(p.n_uniform, 2000), s, ctx.seed)
            test, unif = a.test, a.uniform
            curve.append({"queries": n, "test agreement": test.text(), "uniform agreement": unif.text()})
            ctx.check_time()

        stolen, x, y = margin_retraining(ctx.target.labels, pool, cand, p, ctx.data.n_classes, measure)
        if stolen is None:
            return self.finding(ctx, p, status=Status.SKIPPED, severity=Severity.INFO,   # a constant model
                                headline="skipped: every query got the same label, so there is no boundary to "
                                         "learn (a model that answers one class is copied by that answer)")
        queries = ctx.target.queries - q0
        f = report_copy(self, ctx, p, stolen, queries, y, "svm-margin-copy.pt", {"table": curve},
                        notes=["Each row: the copy after one more round of queries at its smallest margins "
                               "(uniform agreement there on 2,000 points).", DETECTOR_BLIND_SPOT])
        f.metrics.append(Metric("rounds", p.rounds))
        return f
