"""Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks"): step-size-free PGD with momentum and checkpoints where the step is
halved, on cross-entropy (APGD-CE) or the targeted DLR loss (APGD-T)."""
from __future__ import annotations

import math

import torch
from pydantic import Field

from ...core.registry import register
from .common import (EvasionParams, ce_loss, dlr_targeted_loss, normalize_step, project, random_start)
from .whitebox_base import WhiteBoxEvasion


def checkpoints(steps: int) -> set[int]:
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    iters = (math.ceil(q * steps - 1e-9) for q in p[1:])  # 1e-9: 0.57 * 100 must give 57, not 58
    return {i for i in iters if i < steps}


def _apgd_run(model, x0, y0, t0, eps, norm, low, high, steps, loss, rho, ctx):
    """One APGD run on a batch. Returns (adversarial or best-loss point, success mask).

    A point leaves the working set as soon as it is misclassified: robust accuracy needs one
    adversarial example per point, and the remaining iterations then cost only the points left."""
    def value_and_grad(xa, yy, tt):
        xa = xa.clone().requires_grad_(True)
        logits = model(xa)
        lv = ce_loss(logits, yy) if loss == "ce" else dlr_targeted_loss(logits, yy, tt)
        g, = torch.autograd.grad(lv.sum(), xa)
        return lv.detach(), g, logits.detach()

    n = x0.shape[0]
    ckpts = checkpoints(steps)
    found, hit = x0.clone(), torch.zeros(n, dtype=torch.bool)
    idx = torch.arange(n)
    xs, ys, ts = x0, y0, t0
    eta = torch.full((n,) + (1,) * (x0.ndim - 1), 2.0 * eps)
    x_cur = random_start(xs, eps, norm, low, high)
    l_cur, g_cur, logits = value_and_grad(x_cur, ys, ts)
    best_l, x_best, g_best = l_cur.clone(), x_cur.clone(), g_cur.clone()
    x_prev = x_cur.clone()
    n_incr = torch.zeros(n)
    l_ckpt, eta_ckpt, last = best_l.clone(), eta.clone(), 0

    def retire(success, x_adv):
        nonlocal idx, xs, ys, ts, eta, x_cur, l_cur, g_cur, best_l, x_best, g_best, x_prev, n_incr, l_ckpt, eta_ckpt
        if not success.any():
            return
        found[idx[success]] = x_adv[success]
        hit[idx[success]] = True
        k = ~success
        idx, xs, ys = idx[k], xs[k], ys[k]
        ts = ts[k] if ts is not None else None
        eta, x_cur, l_cur, g_cur = eta[k], x_cur[k], l_cur[k], g_cur[k]
        best_l, x_best, g_best, x_prev = best_l[k], x_best[k], g_best[k], x_prev[k]
        n_incr, l_ckpt, eta_ckpt = n_incr[k], l_ckpt[k], eta_ckpt[k]

    retire(logits.argmax(1) != ys, x_cur)
    for k in range(steps):
        if idx.numel() == 0:
            break
        if ctx is not None:
            ctx.check_time()
        with torch.no_grad():
            z = project(x_cur + eta * normalize_step(g_cur, norm), xs, eps, norm, low, high)
            a = 1.0 if k == 0 else 0.75
            x_next = project(x_cur + a * (z - x_cur) + (1 - a) * (x_cur - x_prev), xs, eps, norm, low, high)
        l_next, g_next, logits = value_and_grad(x_next, ys, ts)
        with torch.no_grad():
            n_incr += (l_next > l_cur).float()
            better = l_next > best_l
            best_l[better], x_best[better], g_best[better] = l_next[better], x_next[better], g_next[better]
            x_prev, x_cur, l_cur, g_cur = x_cur, x_next, l_next, g_next
            if k + 1 in ckpts:
                cond1 = n_incr < rho * (k + 1 - last)
                cond2 = (eta.view(-1) == eta_ckpt.view(-1)) & (best_l <= l_ckpt)
                red = cond1 | cond2
                eta[red] /= 2
                back = red.view(-1, *([1] * (xs.ndim - 1)))
                x_cur, g_cur = torch.where(back, x_best, x_cur), torch.where(back, g_best, g_cur)  # x_next intact
                n_incr.zero_()
                l_ckpt, eta_ckpt, last = best_l.clone(), eta.clone(), k + 1
            retire(logits.argmax(1) != ys, x_next)
    found[idx] = x_best
    return found, hit


def apgd(model, x, y, eps: float, norm: str, low: float, high: float, *, steps: int = 100, loss: str = "ce",
         n_targets: int = 3, restarts: int = 1, rho: float = 0.75, batch_size: int = 512, ctx=None):
    """APGD-CE (loss='ce') or APGD-T (loss='dlr-t', over the n_targets most likely wrong classes)."""
    out = []
    for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
        best = xb.clone()
        done = torch.zeros(len(xb), dtype=torch.bool)
        if loss == "ce":
            targets = [None] * restarts
        else:
            with torch.no_grad():
                z = model(xb)
                z.scatter_(1, yb[:, None], float("-inf"))
                order = z.argsort(1, descending=True)
            k = min(n_targets, z.shape[1] - 1)
            targets = [order[:, i] for i in range(k) for _ in range(restarts)]
        for t in targets:
            todo = ~done
            if not todo.any():
                break
            adv, hit = _apgd_run(model, xb[todo], yb[todo], None if t is None else t[todo], eps, norm,
                                 low, high, steps, loss, rho, ctx)
            idx = todo.nonzero()[:, 0]
            best[idx] = adv
            done[idx[hit]] = True
        out.append(best)
    return torch.cat(out)


class APGDParams(EvasionParams):
    steps: int = Field(100, gt=0)
    restarts: int = Field(1, gt=0)
    n_targets: int = Field(3, gt=0)


class _APGD(WhiteBoxEvasion):
    Params = APGDParams
    loss = "ce"

    def attack(self, model, x, y, eps, p, ctx):
        s = ctx.data.space
        return apgd(model, x, y, eps, p.norm, s.low, s.high, steps=p.steps, loss=self.loss,
                    n_targets=p.n_targets, restarts=p.restarts, batch_size=p.batch_size, ctx=ctx)


_PROFILES = {"quick": {"n_samples": 200, "steps": 50}, "standard": {"n_samples": 500, "steps": 100, "n_targets": 9},
             "thorough": {"n_samples": 2000, "steps": 100, "n_targets": 9, "restarts": 5}}


@register
class APGDCE(_APGD):
    """APGD on cross-entropy (Croce & Hein 2020)."""

    name = "apgd-ce"
    title = "APGD-CE adversarial examples"
    profiles = _PROFILES


@register
class APGDDLRT(_APGD):
    """Targeted APGD on the DLR loss (Croce & Hein 2020): robust to logit rescaling that fools CE."""

    name = "apgd-dlr-t"
    title = "APGD-T (targeted DLR) adversarial examples"
    loss = "dlr-t"
    grad_loss = "margin"
    profiles = _PROFILES
