"""Lp-ball geometry shared by the evasion attacks and adversarial training: norms, projection onto the
eps-ball intersected with the input box, steepest-ascent steps, random starts, and one generic
projected-ascent loop (the inner maximisation of Madry et al. 2018)."""
from __future__ import annotations

from typing import Callable

import torch


def bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-example vector shaped to broadcast against a batch like `like`."""
    return v.view(-1, *([1] * (like.ndim - 1)))


def flat_norm(v: torch.Tensor, norm: str) -> torch.Tensor:
    v = v.flatten(1)
    return v.abs().amax(1) if norm == "linf" else v.norm(dim=1)


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float | torch.Tensor, norm: str, low: float,
            high: float) -> torch.Tensor:
    """Project onto the eps-ball around x (Linf or L2) intersected with the input box."""
    delta = x_adv - x
    if norm == "linf":
        e = bcast(eps, x) if torch.is_tensor(eps) else eps
        delta = torch.maximum(torch.minimum(delta, e * torch.ones_like(delta)), -e * torch.ones_like(delta))
    else:
        n = flat_norm(delta, "l2").clamp_min(1e-12)
        e = eps if torch.is_tensor(eps) else torch.full_like(n, eps)
        delta = delta * bcast(torch.clamp(e / n, max=1.0), x)
    return (x + delta).clamp(low, high)


def normalize_step(g: torch.Tensor, norm: str) -> torch.Tensor:
    """The steepest-ascent direction of unit norm: sign(g) for Linf, g / ||g||_2 for L2."""
    if norm == "linf":
        return g.sign()
    return g / bcast(flat_norm(g, "l2").clamp_min(1e-12), g)


def random_start(x: torch.Tensor, eps: float, norm: str, low: float, high: float) -> torch.Tensor:
    """A uniform point of the Linf ball, or a uniform point of the L2 ball, clipped to the input box."""
    if norm == "linf":
        d = torch.empty_like(x).uniform_(-eps, eps)
    else:
        d = torch.randn_like(x)
        d = d / bcast(flat_norm(d, "l2").clamp_min(1e-12), x)
        d = d * bcast(torch.rand(x.shape[0]) ** (1 / x[0].numel()), x) * eps
    return (x + d).clamp(low, high)


def ascend(loss: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, start: torch.Tensor, eps: float,
           norm: str, low: float, high: float, *, steps: int, step_size: float) -> torch.Tensor:
    """Projected steepest ascent on `loss(x_adv)` (summed over the batch) for a fixed number of steps from
    `start`; returns the last iterate, detached. Only input gradients are computed."""
    xa = start.detach()
    for _ in range(steps):
        xa.requires_grad_(True)
        g, = torch.autograd.grad(loss(xa).sum(), xa)
        xa = project(xa.detach() + step_size * normalize_step(g, norm), x, eps, norm, low, high)
    return xa.detach()
