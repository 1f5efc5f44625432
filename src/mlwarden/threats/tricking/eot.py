"""Expectation over Transformation (Athalye, Engstrom, Ilyas, Kwok 2018, "Synthesizing Robust
Adversarial Examples"): attack the average over a distribution of input transformations, so the
example survives them (physical world) or a randomized defence cannot hide behind noise.

`EOT` wraps any model; every white-box attack here accepts the wrapped model unchanged. The
`eot-pgd` threat measures how many adversarial examples stay adversarial under random
translations, brightness changes and sensor noise.
"""
from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from ...core.finding import Metric, Status
from ...core.registry import register
from ...core.threat import Context, Threat
from .common import (ADV_TRAINING, PHYSICAL_ATLAS, EvasionParams, abs_eps, accuracy_metrics, eval_points,
                     predict, severity_from_ratio)
from .pgd import pgd


class EOT(nn.Module):
    """Average logits over `n` draws of `transform`; gradients flow through every draw."""

    def __init__(self, model: nn.Module, transform, n: int = 8):
        super().__init__()
        self.model, self.transform, self.n = model, transform, n

    def forward(self, x):
        rep = x.repeat(self.n, *([1] * (x.ndim - 1)))
        return self.model(self.transform(rep)).view(self.n, x.shape[0], -1).mean(0)


class PhysicalTransform:
    """Random integer translation (images), brightness scaling and Gaussian noise, clipped to range."""

    def __init__(self, low: float, high: float, shift: int = 1, brightness: float = 0.1, noise: float = 0.02,
                 image: bool = True):
        self.low, self.high, self.shift, self.brightness, self.noise, self.image = (
            low, high, shift, brightness, noise, image)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        w = self.high - self.low
        if self.image and self.shift > 0 and x.ndim == 4:
            pad = self.shift
            padded = nn.functional.pad(x - self.low, (pad, pad, pad, pad)) + self.low
            b, _, h, wd = x.shape
            dy = torch.randint(0, 2 * pad + 1, (b,))
            dx = torch.randint(0, 2 * pad + 1, (b,))
            rows = (dy[:, None] + torch.arange(h)[None])[:, None, :, None]
            cols = (dx[:, None] + torch.arange(wd)[None])[:, None, None, :]
            bidx = torch.arange(b)[:, None, None, None]
            cidx = torch.arange(x.shape[1])[None, :, None, None]
            x = padded[bidx, cidx, rows, cols]
        scale = 1 + (torch.rand(x.shape[0], *([1] * (x.ndim - 1))) * 2 - 1) * self.brightness
        x = self.low + (x - self.low) * scale + torch.randn_like(x) * self.noise * w
        return x.clamp(self.low, self.high)


class EOTParams(EvasionParams):
    eot_samples: int = Field(8, gt=0)
    steps: int = Field(40, gt=0)
    eval_draws: int = Field(16, gt=0)
    shift: int | None = Field(None, ge=0, description="max translation in pixels; default 1 px per 16 px of side")
    brightness: float = Field(0.1, ge=0)
    noise: float = Field(0.02, ge=0)


@torch.no_grad()
def majority_correct(model, transform, x, y, draws: int) -> torch.Tensor:
    """Per point: is the prediction correct under a majority of random transformations?"""
    hits = torch.zeros(x.shape[0])
    for _ in range(draws):
        hits += (predict(model, transform(x)) == y).float()
    return hits > draws / 2


@register
class EOTPGD(Threat):
    """Physical-world robust adversarial examples: PGD through EOT (Athalye et al. 2018)."""

    name = "eot-pgd"
    family = "model-tricking"
    title = "Adversarial examples that survive transformations (EOT)"
    atlas = PHYSICAL_ATLAS
    modalities = ("image",)
    Params = EOTParams
    remedy = ADV_TRAINING
    profiles = {"quick": {"n_samples": 100, "steps": 30}, "standard": {"n_samples": 300},
                "thorough": {"n_samples": 1000, "steps": 100, "eot_samples": 32, "eval_draws": 32}}

    def run(self, ctx: Context, p: EOTParams):
        model = ctx.target.module
        s = ctx.data.space
        x, y = eval_points(ctx.data, p.n_samples, ctx.seed)
        eps = abs_eps(p.eps, p.norm, ctx.data)
        shift = p.shift if p.shift is not None else ctx.data.input_shape[-1] // 16
        t = PhysicalTransform(s.low, s.high, shift, p.brightness, p.noise, image=True)
        torch.manual_seed(ctx.seed)
        plain = pgd(model, x, y, eps, p.norm, s.low, s.high, steps=p.steps, batch_size=p.batch_size, ctx=ctx)
        wrapped = EOT(model, t, p.eot_samples)
        robust = pgd(wrapped, x, y, eps, p.norm, s.low, s.high, steps=p.steps, batch_size=p.batch_size, ctx=ctx)
        clean_ok = majority_correct(model, t, x, y, p.eval_draws)
        plain_ok = majority_correct(model, t, plain, y, p.eval_draws)
        eot_ok = majority_correct(model, t, robust, y, p.eval_draws)
        metrics = accuracy_metrics(clean_ok, eot_ok)
        metrics[0].name = "clean_accuracy_transformed"
        metrics[1].name = "robust_accuracy_transformed"
        metrics.append(Metric.rate("robust_accuracy_transformed_plain_pgd", int(plain_ok.sum()), len(y)))
        rob, clean = metrics[1].value, metrics[0].value
        return self.finding(
            ctx, p, status=Status.OK, severity=severity_from_ratio(rob, clean),
            headline=f"under random shifts/brightness/noise, accuracy {100 * clean:.1f}% -> {100 * rob:.1f}% "
                     f"with EOT-PGD ({p.norm} eps={p.eps:g}); plain PGD examples leave "
                     f"{100 * metrics[2].value:.1f}%",
            metrics=metrics)
