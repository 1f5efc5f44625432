"""Shared run loop of the single white-box evasion threats (FGSM, PGD, APGD)."""
from __future__ import annotations

import torch

from ...core.threat import Context, Threat
from .common import (ADV_TRAINING, WHITE_BOX_ATLAS, EvasionParams, abs_eps, accuracy_metrics, eval_points,
                     flat_norm, predict)
from .masking import attack_model, basic_checks, verdict


class WhiteBoxEvasion(Threat):
    family = "model-tricking"
    atlas = WHITE_BOX_ATLAS
    Params = EvasionParams
    remedy = ADV_TRAINING
    grad_loss = "ce"   # the loss whose input gradient the attack follows (the zero-gradient check tests it)

    def attack(self, model, x, y, eps: float, p, ctx: Context) -> torch.Tensor:
        raise NotImplementedError

    def run(self, ctx: Context, p):
        x, y = eval_points(ctx.data, p.n_samples, ctx.seed)
        model = ctx.target.module
        checks = basic_checks(ctx, model, x, y, self.grad_loss)
        model = attack_model(model, checks)
        eps = abs_eps(p.eps, p.norm, ctx.data)
        torch.manual_seed(ctx.seed)
        x_adv = self.attack(model, x, y, eps, p, ctx)
        excess = float((flat_norm(x_adv - x, p.norm) - eps).max())
        if excess > 1e-4 * max(eps, 1.0):
            raise RuntimeError(f"{self.name} left the eps-ball by {excess:.3g}")
        clean_ok = predict(model, x) == y
        robust_ok = clean_ok & (predict(model, x_adv) == y)
        metrics = accuracy_metrics(clean_ok, robust_ok)
        status, sev, headline = verdict(metrics[0].value, metrics[1].value, checks,
                                        f"{self.title.split(' adversarial')[0]} {p.norm} eps={p.eps:g}")
        metrics[1].reliable = status.value == "ok"
        return self.finding(ctx, p, status=status, severity=sev, headline=headline, metrics=metrics,
                            checks=checks, details={"eps_abs": eps})
