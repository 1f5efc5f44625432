"""HopSkipJumpAttack (Chen, Jordan, Wainwright 2020, "HopSkipJumpAttack: A Query-Efficient
Decision-Based Attack"), untargeted, L2 or Linf, label-only, batched over points.

From a misclassified starting point it alternates a binary search to the decision boundary, a
Monte-Carlo estimate of the boundary's normal from label flips, and a geometric step-size search.
All points advance together, so each model call carries every point's probes.
"""
from __future__ import annotations

import math

import torch
from pydantic import Field

from ...core.finding import Metric, Status
from ...core.registry import register
from ...core.target import Access
from ...core.threat import Context, Threat
from ...core.perturb import bcast, flat_norm
from .common import (ADV_TRAINING, BLACK_BOX_ATLAS, EvasionParams, abs_eps, accuracy_metrics, eval_points,
                     severity_from_ratio)


def _binary_search(is_adv, x, x_adv, y, norm, theta, low, high):
    """Move each x_adv towards x until the boundary is bracketed within theta."""
    if norm == "l2":
        lo, hi = torch.zeros(x.shape[0]), torch.ones(x.shape[0])
        thr = torch.full_like(lo, theta)
        blend = lambda a: bcast(1 - a, x) * x + bcast(a, x) * x_adv  # noqa: E731
    else:
        lo, hi = torch.zeros(x.shape[0]), flat_norm(x_adv - x, "linf")
        thr = torch.minimum(hi * theta, torch.full_like(hi, theta))
        blend = lambda a: (x + torch.maximum(torch.minimum(x_adv - x, bcast(a, x)), -bcast(a, x))).clamp(low, high)  # noqa: E731
    for _ in range(50):
        open_ = (hi - lo) > thr
        if not open_.any():
            break
        mid = (hi + lo) / 2
        adv = is_adv(blend(mid), y)
        hi = torch.where(open_ & adv, mid, hi)
        lo = torch.where(open_ & ~adv, mid, lo)
    return blend(hi)


def hop_skip_jump(labels, x, y, low, high, *, norm: str = "l2", max_iter: int = 20, init_evals: int = 100,
                  max_evals: int = 1000, gamma: float = 1.0, init_tries: int = 100, batch_size: int = 100000,
                  ctx=None, stop_at: float | None = None):
    """`labels(x) -> predicted labels`. Returns (x_adv, found mask); x_adv = x where nothing was found.
    `stop_at`: a point whose adversarial example is already within this distance stops (robust accuracy at
    that budget cannot change; its perturbation is then not minimized further)."""
    def is_adv(z, yy):
        return torch.cat([labels(c) for c in z.split(batch_size)]) != yy

    n = x.shape[0]
    d = x[0].numel()
    theta = gamma / (d * math.sqrt(d)) if norm == "l2" else gamma / (d * d)
    theta = theta * (high - low)
    x_adv, found = x.clone(), torch.zeros(n, dtype=torch.bool)
    for _ in range(init_tries):
        todo = (~found).nonzero()[:, 0]
        if todo.numel() == 0:
            break
        noise = torch.empty_like(x[todo]).uniform_(low, high)
        ok = is_adv(noise, y[todo])
        x_adv[todo[ok]] = noise[ok]
        found[todo[ok]] = True
    idx = found.nonzero()[:, 0]
    if idx.numel() == 0:
        return x_adv, found
    xs, ys = x[idx], y[idx]
    xa = _binary_search(is_adv, xs, x_adv[idx], ys, norm, theta, low, high)
    dist = flat_norm(xa - xs, norm)
    xs_all, ys_all, xa_all, dist_all = xs, ys, xa, dist
    for it in range(1, max_iter + 1):
        if ctx is not None:
            ctx.check_time()
        act = (dist_all > stop_at) if stop_at is not None else torch.ones_like(dist_all, dtype=torch.bool)
        if not act.any():
            break
        xs, ys, xa, dist = xs_all[act], ys_all[act], xa_all[act], dist_all[act]
        m = xs.shape[0]
        delta = (math.sqrt(d) * theta * dist) if norm == "l2" else (d * theta * dist)
        delta = delta.clamp_min(theta) if it > 1 else torch.full_like(dist, 0.1 * (high - low))
        k = int(min(init_evals * math.sqrt(it), max_evals))
        u = torch.randn(m, k, *xs.shape[1:]) if norm == "l2" else torch.empty(m, k, *xs.shape[1:]).uniform_(-1, 1)
        u = u / u.flatten(2).norm(dim=2).view(m, k, *([1] * (xs.ndim - 1))).clamp_min(1e-12)
        probe = (xa[:, None] + delta.view(m, 1, *([1] * (xs.ndim - 1))) * u).clamp(low, high)
        u = (probe - xa[:, None]) / delta.view(m, 1, *([1] * (xs.ndim - 1)))
        phi = is_adv(probe.flatten(0, 1), ys.repeat_interleave(k)).view(m, k).float() * 2 - 1
        mean = phi.mean(1, keepdim=True)
        centred = torch.where((mean.abs() == 1), phi, phi - mean)
        grad = (centred.view(m, k, *([1] * (xs.ndim - 1))) * u).mean(1)
        if norm == "l2":
            grad = grad / bcast(flat_norm(grad, "l2").clamp_min(1e-12), grad)
        else:
            grad = grad.sign()
        step = dist / math.sqrt(it)
        pending = torch.ones(m, dtype=torch.bool)
        for _ in range(25):
            cand = (xa + bcast(step, xa) * grad).clamp(low, high)
            ok = torch.ones(m, dtype=torch.bool)
            ok[pending] = is_adv(cand[pending], ys[pending])
            pending &= ~ok
            if not pending.any():
                break
            step = torch.where(pending, step / 2, step)
        moved = ~pending
        cand = (xa + bcast(step, xa) * grad).clamp(low, high)
        xa = torch.where(bcast(moved, xa), cand, xa)
        xa = _binary_search(is_adv, xs, xa, ys, norm, theta, low, high)
        xa_all[act] = xa
        dist_all[act] = flat_norm(xa - xs, norm)
    x_adv[idx] = xa_all
    return x_adv, found


class HSJParams(EvasionParams):
    norm: str = Field("l2", pattern="^(linf|l2)$")
    eps: float = Field(1.0, gt=0)
    max_iter: int = Field(20, gt=0)
    init_evals: int = Field(100, gt=0)
    max_evals: int = Field(1000, gt=0)
    stop_at_eps: bool = Field(True, description="a point already broken within eps stops (robust accuracy at eps "
                              "is unchanged; its median perturbation is then an upper bound)")


@register
class HopSkipJump(Threat):
    """Label-only black-box HopSkipJump (Chen et al. 2020): minimal perturbations from decisions alone."""

    name = "hopskipjump"
    family = "model-tricking"
    title = "HopSkipJump attack (black-box, labels only)"
    needs = Access.LABELS
    atlas = BLACK_BOX_ATLAS
    Params = HSJParams
    remedy = ADV_TRAINING
    profiles = {"quick": {"n_samples": 100, "max_iter": 15}, "standard": {"n_samples": 300, "max_iter": 40},
                "thorough": {"n_samples": 1000, "max_iter": 64, "max_evals": 10000}}

    def run(self, ctx: Context, p: HSJParams):
        x, y = eval_points(ctx.data, p.n_samples, ctx.seed)
        s = ctx.data.space
        eps = abs_eps(p.eps, p.norm, ctx.data)
        tgt = ctx.target
        torch.manual_seed(ctx.seed)
        with tgt.budget(None):
            clean_ok = tgt.labels(x) == y
            xc, yc = x[clean_ok], y[clean_ok]
            x_adv, found = hop_skip_jump(tgt.labels, xc, yc, s.low, s.high, norm=p.norm, max_iter=p.max_iter,
                                         init_evals=p.init_evals, max_evals=p.max_evals, ctx=ctx,
                                         stop_at=eps if p.stop_at_eps else None)
            still_correct = tgt.labels(x_adv) == yc
        spent = tgt.spent
        dist = flat_norm(x_adv - xc, p.norm)
        broken = found & ~still_correct & (dist <= eps + 1e-6)
        robust_ok = clean_ok.clone()
        robust_ok[clean_ok] = ~broken
        metrics = accuracy_metrics(clean_ok, robust_ok)
        ok_d = dist[found & ~still_correct] / s.width
        if ok_d.numel():
            metrics.append(Metric("median_perturbation" + (" (upper bound: points broken within eps stop)"
                                                            if p.stop_at_eps else ""),
                                  float(ok_d.median()), int(ok_d.numel()), unit=f"{p.norm} (fraction of range)"))
        metrics.append(Metric("queries_per_point", spent / max(int(clean_ok.sum()), 1), int(clean_ok.sum()),
                              unit="queries"))
        clean, rob = metrics[0].value, metrics[1].value
        return self.finding(
            ctx, p, status=Status.OK, severity=severity_from_ratio(rob, clean),
            headline=f"HopSkipJump {p.norm} eps={p.eps:g} from labels alone: accuracy {100 * clean:.1f}% -> "
                     f"{100 * rob:.1f}% ({spent} queries)",
            metrics=metrics, queries=spent, details={"eps_abs": eps})
