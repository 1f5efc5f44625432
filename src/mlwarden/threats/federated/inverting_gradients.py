"""Inverting Gradients (Geiping, Bauermeister, Droege & Moeller 2020, "Inverting gradients - how easy is it to
break privacy in federated learning?"): dummy inputs optimized with Adam on signed gradients to minimize
1 - cos(their gradient, the update) + tv x total variation, kept inside the input range; the labels are
iDLG's. Cosine distance ignores the update's scale, so it also attacks multi-step FedAvg deltas."""
from __future__ import annotations

import torch
from pydantic import Field

from ...core.registry import register
from .idlg import idlg_labels
from .leakage import LeakageParams, LeakageThreat, gradients


def total_variation(x: torch.Tensor) -> torch.Tensor:
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


def inverting_gradients(model, update: list[torch.Tensor], labels: torch.Tensor, shape, seed: int,
                        iterations: int = 400, lr: float = 0.1, tv: float = 1e-2, low: float = 0.0,
                        high: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    dummy = (low + (high - low) * torch.rand(shape, generator=g)).requires_grad_(True)
    opt = torch.optim.Adam([dummy], lr=lr)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [int(iterations * f) for f in (0.375, 0.625, 0.875)], 0.1)
    norm = torch.sqrt(sum((u * u).sum() for u in update))
    for _ in range(iterations):
        opt.zero_grad()
        mine = gradients(model, dummy, labels, create_graph=True)
        dot = sum((a * b).sum() for a, b in zip(mine, update))
        mnorm = torch.sqrt(sum((a * a).sum() for a in mine))
        loss = 1 - dot / (mnorm * norm + 1e-12) + tv * total_variation(dummy)
        dummy.grad, = torch.autograd.grad(loss, [dummy])
        dummy.grad.sign_()
        opt.step()
        sched.step()
        with torch.no_grad():
            dummy.clamp_(low, high)
    return dummy.detach()


class IGParams(LeakageParams):
    iterations: int = Field(400, ge=1, le=100_000, description="Adam steps")
    step: float = Field(0.1, gt=0, description="Adam learning rate")
    tv: float = Field(1e-2, ge=0, description="weight of the total-variation prior")


@register
class InvertingGradients(LeakageThreat):
    """Inverting Gradients: cosine gradient matching with a total-variation prior (Geiping et al. 2020)."""
    name = "inverting-gradients"
    title = "Inverting Gradients"
    what = "Inverting Gradients reconstructs its images"
    Params = IGParams
    profiles = {"quick": {"trials": 5, "batch_sizes": [1, 4]}, "standard": {}, "thorough": {"trials": 50}}

    def reconstruct(self, model, update, batch, shape, n_classes, seed, p, ctx):
        labels = idlg_labels(update, batch, n_classes)
        sp = ctx.data.space
        return inverting_gradients(model, update, labels, shape, seed, p.iterations, p.step, p.tv, float(sp.low),
                                   float(sp.high)), labels
