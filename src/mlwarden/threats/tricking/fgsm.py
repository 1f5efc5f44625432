"""Fast Gradient Sign Method (Goodfellow, Shlens, Szegedy 2015, "Explaining and Harnessing
Adversarial Examples"); the L2 variant steps along the normalized gradient."""
from __future__ import annotations

import torch

from ...core.registry import register
from .common import ce_loss, normalize_step
from .whitebox_base import WhiteBoxEvasion


def fgsm(model, x, y, eps: float, norm: str, low: float, high: float) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    g, = torch.autograd.grad(ce_loss(model(x), y).sum(), x)
    return (x.detach() + eps * normalize_step(g, norm)).clamp(low, high)


@register
class FGSM(WhiteBoxEvasion):
    """One gradient step (Goodfellow et al. 2015): the cheapest white-box attack, a lower bound."""

    name = "fgsm"
    title = "FGSM adversarial examples"
    profiles = {"quick": {"n_samples": 200}, "standard": {"n_samples": 500}, "thorough": {"n_samples": 2000}}

    def attack(self, model, x, y, eps, p, ctx):
        s = ctx.data.space
        return fgsm(model, x, y, eps, p.norm, s.low, s.high)
