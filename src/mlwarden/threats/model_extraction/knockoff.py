"""Knockoff Nets (Orekondy et al. 2019, "Knockoff Nets: Stealing Functionality of Black-Box Models"):
query the victim with natural inputs from the attacker's own population data (random strategy), train
a copy on the answers (probabilities when the API gives them, labels otherwise)."""
from __future__ import annotations

import torch
from pydantic import Field

from ...core import zoo
from ...core.registry import register
from ...core.threat import Context, Params
from .common import DETECTOR_BLIND_SPOT, ExtractionThreat, ask, copy_factory, fit_copy, population, report_copy


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
        factory = copy_factory(ctx, zoo.mlp)
        stolen = fit_copy(factory, x, answers, ctx.data.n_classes, epochs=p.epochs, seed=ctx.seed)
        return report_copy(self, ctx, p, stolen, paid, answers, "knockoff-copy.pt",
                           {"answers_used": p.budget}, notes=[DETECTOR_BLIND_SPOT])

