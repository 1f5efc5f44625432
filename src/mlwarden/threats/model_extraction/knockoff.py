"""Knockoff Nets (Orekondy et al. 2019, "Knockoff Nets: Stealing Functionality of Black-Box Models"):
query the victim with natural inputs from the attacker's own population data (random strategy), train
a copy on the answers (probabilities when the API gives them, labels otherwise)."""
from __future__ import annotations

import torch
from pydantic import Field

from ...core import zoo
from ...core.finding import Metric, Status
from ...core.registry import register
from ...core.threat import Context, Params
from .common import ExtractionThreat, agreement, ask, fit_copy, severity


class Kp(Params):
    budget: int = Field(1000, ge=10, description="queries to the victim")
    epochs: int = Field(60, ge=1)
    n_uniform: int = Field(5000, ge=100)


@register
class Knockoff(ExtractionThreat):
    """Knockoff Nets: train a copy on the victim's answers to the attacker's natural population data."""
    name = "extract-knockoff"
    title = "Model extraction by Knockoff Nets (natural queries, trained copy)"
    Params = Kp
    profiles = {"quick": {"budget": 1000}, "standard": {"budget": 5000}, "thorough": {"budget": 20000}}

    def run(self, ctx: Context, p: Kp):
        pool = population(ctx)
        g = torch.Generator().manual_seed(ctx.seed)
        x = pool[torch.randint(0, len(pool), (p.budget,), generator=g)]
        q0 = ctx.target.queries
        answers = ask(ctx.target, x)
        paid = ctx.target.queries - q0  # repeated picks are free at a caching client (the HTTP target)
        factory = ctx.recipe.factory if ctx.recipe is not None else zoo.mlp
        stolen = fit_copy(factory, x, answers, ctx.data.n_classes, epochs=p.epochs, seed=ctx.seed)
        return report_copy(self, ctx, p, stolen, paid, answers, "knockoff-copy.pt", {"answers_used": p.budget})


def population(ctx: Context) -> torch.Tensor:
    """The attacker's natural data: the data set's train split (the audit's stand-in for data from the
    same distribution that the attacker owns), never the test split agreement is measured on."""
    return ctx.data.x_train


def report_copy(threat, ctx: Context, p, stolen, queries: int, answers, evidence: str, extra: dict | None = None):
    metrics = agreement(ctx.target, stolen, ctx.data.x_test, p.n_uniform, ctx.data.space, ctx.seed)
    metrics.append(Metric("queries", queries, unit="queries"))
    path = ctx.evidence_path(evidence)
    torch.save(stolen.state_dict(), path)
    test = metrics[0]
    kind = "probabilities" if answers.ndim == 2 else "labels"
    head = (f"copied from {queries} answers ({kind}): {test.text()} test agreement, {metrics[1].text()} on "
            f"uniform inputs (training set: {len(ctx.data.x_train)} examples)")
    notes = [DETECTOR_BLIND_SPOT] if threat.name in ("extract-knockoff", "extract-retraining") else []
    return threat.finding(ctx, p, status=Status.OK, severity=severity(test.value, queries, len(ctx.data.x_train)),
                          headline=head, metrics=metrics, evidence=[ctx.rel(path)], queries=queries,
                          details={"answers": kind, "notes": notes, **(extra or {})})


DETECTOR_BLIND_SPOT = ("A PRADA-style detector (mlwarden serve --detector) does not see this attacker: natural "
                       "population data and uniform random queries give normally distributed query distances. "
                       "It flags synthetic streams such as Jacobian augmentation; against this one, budgets, "
                       "rate limits, label-only answers and the watermark are what remain.")
