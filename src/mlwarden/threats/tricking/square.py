"""Square Attack (Andriushchenko, Croce, Flammarion, Hein 2020, "Square Attack: a query-efficient
black-box adversarial attack via random search"), Linf, score-based.

Random search over square-shaped updates at the vertices of the Linf ball; a candidate is kept when it
lowers the margin loss. Needs only probabilities: log-probability margins equal logit margins. Every
point stops being queried once it is misclassified, and the query budget per point is exact.
"""
from __future__ import annotations

import math

import torch
from pydantic import Field

from ...core.finding import Metric, Status
from ...core.registry import register
from ...core.target import Access
from ...core.threat import Context, Threat
from .common import (ADV_TRAINING, BLACK_BOX_ATLAS, EvasionParams, abs_eps, accuracy_metrics, eval_points,
                     severity_from_ratio)

_SCHEDULE = [(10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128),
             (8000, 256)]


def p_schedule(p_init: float, it: int, n_iters: int) -> float:
    """Fraction of pixels changed at iteration `it`, halved on the paper's 10,000-query schedule."""
    i = int(it / n_iters * 10000)
    div = 512
    for limit, d in _SCHEDULE:
        if i <= limit:
            div = d
            break
    return p_init / div


def _margin_from_scores(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logp = p.clamp_min(1e-30).log()
    true = logp.gather(1, y[:, None])[:, 0]
    logp = logp.scatter(1, y[:, None], float("-inf"))
    return true - logp.amax(1)


def square_linf(query, x: torch.Tensor, y: torch.Tensor, eps: float, low: float, high: float, *,
                max_queries: int = 1000, p_init: float = 0.1, ctx=None):
    """`query(x) -> probabilities`. Returns (x_adv, queries spent per point, success mask)."""
    shape = x.shape
    xi = x.reshape(shape[0], -1, *(shape[-2:] if x.ndim >= 3 else (1, shape[-1])))
    n, c, h, w = xi.shape
    to_img = lambda t: t.reshape(-1, *shape[1:])  # noqa: E731
    queries = torch.zeros(n, dtype=torch.long)
    stripes = eps * torch.randint(0, 2, (n, c, 1, w)).float().mul(2).sub(1)
    x_best = (xi + stripes).clamp(low, high)
    m = _margin_from_scores(query(to_img(x_best)), y)
    queries += 1
    for it in range(1, max_queries):
        if ctx is not None:
            ctx.check_time()
        active = (m > 0).nonzero()[:, 0]
        if active.numel() == 0:
            break
        xa, xb = xi[active], x_best[active]
        p = p_schedule(p_init, it, max_queries)
        if h == 1:
            sh, sw = 1, max(1, min(w, round(p * w)))
        else:
            s = max(1, min(h, w, round(math.sqrt(p * h * w))))
            sh = sw = s
        k = active.numel()
        r0 = torch.randint(0, h - sh + 1, (k,))
        c0 = torch.randint(0, w - sw + 1, (k,))
        rows = (torch.arange(h)[None] >= r0[:, None]) & (torch.arange(h)[None] < (r0 + sh)[:, None])
        cols = (torch.arange(w)[None] >= c0[:, None]) & (torch.arange(w)[None] < (c0 + sw)[:, None])
        window = (rows[:, None, :, None] & cols[:, None, None, :])
        signs = eps * torch.randint(0, 2, (k, c, 1, 1)).float().mul(2).sub(1)
        delta = torch.where(window, signs.expand(k, c, h, w), xb - xa)
        cand = (xa + delta.clamp(-eps, eps)).clamp(low, high)
        mc = _margin_from_scores(query(to_img(cand)), y[active])
        queries[active] += 1
        better = mc < m[active]
        x_best[active[better]] = cand[better]
        m[active[better]] = mc[better]
    return to_img(x_best), queries, m <= 0


class SquareParams(EvasionParams):
    max_queries: int = Field(1000, gt=1, description="queries per point")
    p_init: float = Field(0.1, gt=0, le=1)


@register
class Square(Threat):
    """Score-based black-box Square attack (Andriushchenko et al. 2020), Linf, query-budgeted."""

    name = "square"
    family = "model-tricking"
    title = "Square attack (black-box, scores)"
    needs = Access.SCORES
    atlas = BLACK_BOX_ATLAS
    Params = SquareParams
    remedy = ADV_TRAINING
    profiles = {"quick": {"n_samples": 200, "max_queries": 1000}, "standard": {"n_samples": 500, "max_queries": 5000},
                "thorough": {"n_samples": 1000, "max_queries": 10000}}

    def run(self, ctx: Context, p: SquareParams):
        if p.norm != "linf":
            raise ValueError("square is implemented for the linf norm")
        x, y = eval_points(ctx.data, p.n_samples, ctx.seed)
        s = ctx.data.space
        eps = abs_eps(p.eps, p.norm, ctx.data)
        tgt = ctx.target
        torch.manual_seed(ctx.seed)
        with tgt.budget(p.n_samples * (p.max_queries + 1)):
            clean_ok = tgt.labels(x) == y
            xc, yc = x[clean_ok], y[clean_ok]
            x_adv, q, fooled = square_linf(tgt.scores, xc, yc, eps, s.low, s.high, max_queries=p.max_queries,
                                           p_init=p.p_init, ctx=ctx)
            still = tgt.labels(x_adv) == yc
        spent = tgt.spent
        robust_ok = clean_ok.clone()
        robust_ok[clean_ok] = still
        metrics = accuracy_metrics(clean_ok, robust_ok)
        if fooled.any():
            qs = q[fooled].float()
            metrics += [Metric("median_queries_to_success", float(qs.median()), int(fooled.sum()), unit="queries"),
                        Metric("mean_queries_to_success", float(qs.mean()), int(fooled.sum()), unit="queries")]
        clean, rob = metrics[0].value, metrics[1].value
        return self.finding(
            ctx, p, status=Status.OK, severity=severity_from_ratio(rob, clean),
            headline=f"Square linf eps={p.eps:g}, {p.max_queries} queries/point: accuracy "
                     f"{100 * clean:.1f}% -> {100 * rob:.1f}%",
            metrics=metrics, queries=spent, details={"eps_abs": eps})
