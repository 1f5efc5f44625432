"""Universal adversarial patch (Brown, Mane, Roy, Abadi, Gilmer 2017, "Adversarial Patch").

One patch, trained over random placements (an expectation over transformations), that makes any image
it is pasted on be classified as the target class. Measured as targeted success on held-out images of
other classes, each at a fresh random placement.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field

from ...core.finding import Metric, Remedy, Status
from ...core.severity import PATCH
from ...core.registry import register
from ...core.threat import Context, Params, Threat
from .common import PHYSICAL_ATLAS, eval_points, predict


def apply_patch(x: torch.Tensor, patch: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Paste `patch` (C, s, s) on each image of x (B, C, H, W) at its own top-left corner (rows, cols)."""
    b, c, _, _ = x.shape
    s = patch.shape[-1]
    r = (rows[:, None] + torch.arange(s)[None])[:, :, None].expand(b, s, s)
    q = (cols[:, None] + torch.arange(s)[None])[:, None, :].expand(b, s, s)
    bi = torch.arange(b)[:, None, None].expand(b, s, s)
    out = x.clone()
    out[bi, :, r, q] = patch.permute(1, 2, 0).expand(b, s, s, c)
    return out


def random_corners(b: int, h: int, w: int, s: int, gen=None):
    return (torch.randint(0, h - s + 1, (b,), generator=gen), torch.randint(0, w - s + 1, (b,), generator=gen))


def train_patch(model, x: torch.Tensor, target: int, side: int, low: float, high: float, *, steps: int = 500,
                batch_size: int = 128, step_size: float = 0.02, ctx=None) -> torch.Tensor:
    """Signed-gradient descent on the patch pixels, each batch at fresh random placements (EOT over
    placements). On small images this converged better than Adam on a sigmoid-parametrized patch."""
    c, h, w = x.shape[1:]
    patch = low + (high - low) * torch.rand(c, side, side)
    tgt = torch.full((batch_size,), target, dtype=torch.long)
    for _ in range(steps):
        if ctx is not None:
            ctx.check_time()
        idx = torch.randint(0, x.shape[0], (batch_size,))
        r, q = random_corners(batch_size, h, w, side)
        patch.requires_grad_(True)
        loss = F.cross_entropy(model(apply_patch(x[idx], patch, r, q)), tgt)
        g, = torch.autograd.grad(loss, patch)
        patch = (patch.detach() - step_size * (high - low) * g.sign()).clamp(low, high)
    return patch.detach()


class PatchParams(Params):
    target_class: int = Field(0, ge=0)
    area: float = Field(0.1, gt=0, lt=1, description="patch area as a fraction of the image")
    steps: int = Field(500, gt=0)
    n_samples: int = Field(300, gt=0)
    placements: int = Field(10, gt=0, description="random placements per held-out image")


@register
class AdversarialPatch(Threat):
    """Universal targeted adversarial patch over random placements (Brown et al. 2017)."""

    name = "adversarial-patch"
    family = "model-tricking"
    title = "Universal adversarial patch"
    atlas = PHYSICAL_ATLAS
    modalities = ("image",)
    Params = PatchParams
    remedy = Remedy("patch defences", "Train with patches (adversarial training over placements) or certify "
                      "with (de)randomized smoothing over image ablations (Levine & Feizi 2020); re-attack adaptively.")
    profiles = {"quick": {"steps": 500}, "standard": {"steps": 1500, "n_samples": 1000},
                "thorough": {"steps": 3000, "n_samples": 5000, "placements": 32}}

    def run(self, ctx: Context, p: PatchParams):
        model = ctx.target.module
        s = ctx.data.space
        if p.target_class >= ctx.data.n_classes:
            raise ValueError(f"target_class {p.target_class} but the model has {ctx.data.n_classes} classes")
        c, h, w = ctx.data.input_shape
        side = max(1, round(math.sqrt(p.area * h * w)))
        torch.manual_seed(ctx.seed)
        # the attacker trains on its own population data (train split) and is measured on held-out images
        patch = train_patch(model, ctx.data.x_train, p.target_class, side, s.low, s.high, steps=p.steps, ctx=ctx)
        x, y = eval_points(ctx.data, p.n_samples, ctx.seed)
        keep = y != p.target_class
        x, y = x[keep], y[keep]
        gen = torch.Generator().manual_seed(ctx.seed + 1)
        r, q = random_corners(len(x), h, w, side, gen)
        hit = predict(model, apply_patch(x, patch, r, q)) == p.target_class
        rates = []
        for _ in range(p.placements):
            r, q = random_corners(len(x), h, w, side, gen)
            rates.append(float((predict(model, apply_patch(x, patch, r, q)) == p.target_class).float().mean()))
        base = float((predict(model, x) == p.target_class).float().mean())
        noise = s.low + s.width * torch.rand(patch.shape, generator=gen)
        control = float((predict(model, apply_patch(x, noise, r, q)) == p.target_class).float().mean())
        m = Metric.rate("targeted_success", int(hit.sum()), len(x))
        metrics = [m, Metric("targeted_success_mean_over_placements", sum(rates) / len(rates), len(x) * len(rates)),
                   Metric("target_rate_without_patch", base, len(x)),
                   Metric("target_rate_random_patch", control, len(x)),
                   Metric("patch_side", side, unit="pixels"), Metric("patch_area", side * side / (h * w), unit="fraction")]
        sev = PATCH.grade(m.value)
        ev = ctx.evidence_path("patch.png")
        _save_patch_figure(ev, patch, x[:8], r[:8], q[:8], model, p.target_class, s.low, s.high)
        return self.finding(
            ctx, p, status=Status.OK, severity=sev,
            headline=f"a {side}x{side} patch ({100 * side * side / (h * w):.0f}% of the image) turns "
                     f"{100 * m.value:.1f}% of other-class images into class {p.target_class} at random placements",
            metrics=metrics, evidence=[ctx.rel(ev)], details={"patch": patch.tolist()})


def _save_patch_figure(path, patch, x, r, q, model, target, low, high):
    from ...plots import image_row
    patched = apply_patch(x, patch, r, q)
    preds = predict(model, patched)
    image_row(path, [patch] + list(patched), ["patch"] + [f"pred {int(p)}" for p in preds], low, high,
              title=f"Universal patch, target class {target}")
