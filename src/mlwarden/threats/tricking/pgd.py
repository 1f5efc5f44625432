"""Projected Gradient Descent with random start and restarts (Madry, Makelov, Schmidt, Tsipras,
Vladu 2018, "Towards Deep Learning Models Resistant to Adversarial Attacks"), Linf and L2."""
from __future__ import annotations

import torch
from pydantic import Field

from ...core.registry import register
from .common import EvasionParams, ce_loss, normalize_step, project, random_start
from .whitebox_base import WhiteBoxEvasion


def pgd(model, x, y, eps: float, norm: str, low: float, high: float, *, steps: int = 40,
        step_size: float | None = None, restarts: int = 1, rand_init: bool = True, batch_size: int = 512,
        ctx=None) -> torch.Tensor:
    """Untargeted PGD on cross-entropy. Returns, per point, the first adversarial iterate found over
    all restarts, or the last iterate when none was found."""
    alpha = step_size if step_size is not None else 2.5 * eps / steps
    out = []
    for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
        best = xb.clone()
        done = torch.zeros(len(xb), dtype=torch.bool)
        for _ in range(restarts):
            todo = ~done
            if not todo.any():
                break
            x0, y0 = xb[todo], yb[todo]
            xa = random_start(x0, eps, norm, low, high) if rand_init else x0.clone()
            hit = torch.zeros(len(x0), dtype=torch.bool)
            found = xa.clone()
            for _ in range(steps):
                if ctx is not None:
                    ctx.check_time()
                xa.requires_grad_(True)
                logits = model(xa)
                g, = torch.autograd.grad(ce_loss(logits, y0).sum(), xa)
                with torch.no_grad():
                    new = ~hit & (logits.argmax(1) != y0)
                    found[new] = xa.detach()[new]
                    hit |= new
                    xa = project(xa.detach() + alpha * normalize_step(g, norm), x0, eps, norm, low, high)
            with torch.no_grad():
                new = ~hit & (model(xa).argmax(1) != y0)
                found[new] = xa[new]
                hit |= new
                found[~hit] = xa[~hit]
            idx = todo.nonzero()[:, 0]
            best[idx] = found
            done[idx[hit]] = True
        out.append(best)
    return torch.cat(out)


class PGDParams(EvasionParams):
    steps: int = Field(40, gt=0)
    restarts: int = Field(1, gt=0)
    step_size: float | None = Field(None, gt=0, description="fraction of the input range; default 2.5 eps/steps")


class _PGD(WhiteBoxEvasion):
    Params = PGDParams

    def attack(self, model, x, y, eps, p, ctx):
        s = ctx.data.space
        step = p.step_size * s.width if p.step_size else None
        return pgd(model, x, y, eps, p.norm, s.low, s.high, steps=p.steps, step_size=step,
                   restarts=p.restarts, batch_size=p.batch_size, ctx=ctx)


@register
class PGDLinf(_PGD):
    """PGD under an Linf budget with random start and restarts (Madry et al. 2018)."""

    name = "pgd-linf"
    title = "PGD adversarial examples (Linf)"
    profiles = {"quick": {"n_samples": 200, "steps": 40}, "standard": {"n_samples": 500, "steps": 100, "restarts": 2},
                "thorough": {"n_samples": 2000, "steps": 200, "restarts": 5}}


@register
class PGDL2(_PGD):
    """PGD under an L2 budget with random start and restarts (Madry et al. 2018)."""

    name = "pgd-l2"
    title = "PGD adversarial examples (L2)"
    profiles = {k: {**v, "norm": "l2", "eps": 1.0} for k, v in PGDLinf.profiles.items()}
