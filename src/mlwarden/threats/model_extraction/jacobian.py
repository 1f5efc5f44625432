"""Jacobian-based dataset augmentation (Papernot et al. 2017, "Practical Black-Box Attacks against
Machine Learning"): start from a small seed set, label it with the victim, train a substitute, and each
round add x + lambda * sign(d F_sub[victim label](x) / dx) for every x in the set, doubling it. The
synthetic queries cluster around the seeds, which is what PRADA-style detectors look for."""
from __future__ import annotations

import torch
from pydantic import Field

from ...core import zoo
from ...core.registry import register
from ...core.threat import Context, Params
from .common import ExtractionThreat, ask, copy_factory, fit_copy, population, report_copy


class Jp(Params):
    seeds_per_class: int = Field(10, ge=1)
    rounds: int = Field(5, ge=1, le=10)
    step: float = Field(0.1, gt=0, description="lambda, as a fraction of the input range")
    epochs: int = Field(40, ge=1)
    n_uniform: int = Field(5000, ge=100)


def jacobian_augment(sub, x: torch.Tensor, y: torch.Tensor, step: float, low: float, high: float) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    out = sub(x)
    grad, = torch.autograd.grad(out.gather(1, y.view(-1, 1)).sum(), x)
    return (x + step * grad.sign()).clamp(low, high).detach()


def jacobian_queries(ctx: Context, p: Jp, on_round=None):
    """Yields nothing; returns (substitute, all queried inputs, their answers). `on_round(x_new)` sees
    every round's new queries (the detector test feeds them to a server one batch at a time)."""
    pool, ys = population(ctx), ctx.data.y_train
    g = torch.Generator().manual_seed(ctx.seed)
    seeds = []
    for c in range(ctx.data.n_classes):  # the attacker knows a few labelled examples per class
        idx = torch.nonzero(ys == c).view(-1)
        seeds.append(idx[torch.randperm(len(idx), generator=g)[: p.seeds_per_class]])
    x = pool[torch.cat(seeds)]
    answers = ask(ctx.target, x, prefer_scores=False)
    factory = copy_factory(ctx, zoo.mlp)
    space = ctx.data.space
    sub = None
    for r in range(p.rounds):
        ctx.check_time()
        sub = fit_copy(factory, x, answers, ctx.data.n_classes, epochs=p.epochs, seed=ctx.seed + r)
        if r == p.rounds - 1:
            break
        x_new = jacobian_augment(sub, x, answers, p.step * space.width * (-1) ** r, space.low, space.high)
        if on_round is not None:
            on_round(x_new)
        answers = torch.cat([answers, ask(ctx.target, x_new, prefer_scores=False)])
        x = torch.cat([x, x_new])
    return sub, x, answers


@register
class JacobianAugmentation(ExtractionThreat):
    """Papernot et al. 2017: substitute trained on Jacobian-augmented synthetic queries (labels suffice)."""
    name = "extract-jacobian"
    title = "Model extraction by Jacobian-based dataset augmentation"
    Params = Jp

    def run(self, ctx: Context, p: Jp):
        sub, x, answers = jacobian_queries(ctx, p)
        return report_copy(self, ctx, p, sub, len(x), answers, "jacobian-substitute.pt",
                           {"rounds": p.rounds, "seed_queries": p.seeds_per_class * ctx.data.n_classes})
