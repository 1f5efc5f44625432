"""Deep Leakage from Gradients (Zhu, Liu & Han 2019): the server optimizes dummy inputs until their gradient
matches the client's (squared L2 distance, L-BFGS), with the labels recovered by iDLG (Zhao et al. 2020)
fixed, which is more stable than optimizing soft labels alongside."""
from __future__ import annotations

import torch
from pydantic import Field

from ...core.registry import register
from .idlg import idlg_labels
from .leakage import LeakageParams, LeakageThreat, gradients


def dlg(model, update: list[torch.Tensor], labels: torch.Tensor, shape, seed: int, iterations: int = 100,
        low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    dummy = (low + (high - low) * torch.rand(shape, generator=g)).requires_grad_(True)
    opt = torch.optim.LBFGS([dummy], lr=1, max_iter=iterations, history_size=100, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure():
        opt.zero_grad()
        mine = gradients(model, dummy, labels, create_graph=True)
        loss = sum(((a - b) ** 2).sum() for a, b in zip(mine, update))
        loss.backward()
        return loss
    opt.step(closure)
    return dummy.detach()


class DLGParams(LeakageParams):
    iterations: int = Field(100, ge=1, le=10_000, description="L-BFGS iterations")


@register
class DLG(LeakageThreat):
    """Deep Leakage from Gradients: dummy inputs optimized until their gradient matches the update (Zhu et al. 2019)."""
    name = "dlg"
    title = "Deep Leakage from Gradients"
    what = "DLG reconstructs its images"
    Params = DLGParams

    def reconstruct(self, model, update, batch, shape, n_classes, seed, p, ctx):
        labels = idlg_labels(update, batch, n_classes)
        sp = ctx.data.space
        return dlg(model, update, labels, shape, seed, p.iterations, float(sp.low), float(sp.high)), labels
