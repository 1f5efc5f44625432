"""The audit's white-box verdict: the worst case over a cascade of attacks, in the manner of
AutoAttack (Croce & Hein 2020): APGD-CE, then APGD-T (targeted DLR) on the points still standing,
then the score-based Square attack on what is left. Every point counts as broken if any attack broke it.

Around it sit the gradient-masking checks that decide whether the number is a result: black-box
finds more than white-box; more steps help; the security curve is not monotone in eps or does not
reach ~0 at a budget that covers the whole input range; plus the cheap checks in `masking.py`.
"""
from __future__ import annotations

import math

import torch
from pydantic import Field

from ...core.finding import Check, Metric
from ...core.registry import register
from ...core.stats import clopper_pearson
from ...core.target import Access
from ...core.threat import Context, Threat
from .apgd import apgd
from .common import (ADV_TRAINING, WHITE_BOX_ATLAS, EvasionParams, abs_eps, accuracy_metrics, eval_points,
                     predict)
from .masking import attack_model, basic_checks, verdict
from .pgd import pgd
from .square import square_linf

BLACK_BOX_MARGIN = 0.02      # Square may break at most this share of points the white-box attacks missed
MORE_STEPS_MARGIN = 0.05     # 4x more steps and 2 restarts may lower robust accuracy by at most this
MONOTONE_MARGIN = 0.03       # a larger eps may raise robust accuracy by at most this (sampling noise)
LARGE_EPS_LIMIT = 0.05       # at an eps covering the whole input range robust accuracy must be below this


class CascadeParams(EvasionParams):
    apgd_steps: int = Field(100, gt=0)
    n_targets: int = Field(3, gt=0)
    restarts: int = Field(1, gt=0)
    square_queries: int = Field(1000, ge=0, description="0 disables the black-box stage")
    curve: list[float] | None = Field(None, description="eps values (fractions of range) for the security curve")
    curve_steps: int = Field(30, gt=0)
    check_steps: int = Field(20, gt=0)


def curve_grid(eps: float, norm: str, d: int) -> list[float]:
    large = 1.0 if norm == "linf" else math.sqrt(d)
    pts = sorted({0.0, *(f * eps for f in (0.25, 0.5, 1, 2, 3, 5) if f * eps < large), large})
    return pts


@register
class WhiteBoxCascade(Threat):
    """Worst case over APGD-CE, APGD-T and Square with gradient-masking checks (AutoAttack-style)."""

    name = "whitebox-cascade"
    family = "model-tricking"
    title = "Adversarial robustness verdict (attack cascade)"
    atlas = WHITE_BOX_ATLAS
    Params = CascadeParams
    remedy = ADV_TRAINING
    profiles = {"quick": {"n_samples": 200, "apgd_steps": 50, "square_queries": 500, "curve_steps": 20},
                "standard": {"n_samples": 500, "n_targets": 9, "square_queries": 5000},
                "thorough": {"n_samples": 2000, "n_targets": 9, "restarts": 5, "square_queries": 10000,
                             "curve_steps": 100, "check_steps": 50}}

    def run(self, ctx: Context, p: CascadeParams):
        s, data = ctx.data.space, ctx.data
        x, y = eval_points(data, p.n_samples, ctx.seed)
        n = len(y)
        raw = ctx.target.module
        checks = basic_checks(ctx, raw, x, y)
        model = attack_model(raw, checks)
        eps = abs_eps(p.eps, p.norm, data)
        torch.manual_seed(ctx.seed)
        kw = dict(norm=p.norm, low=s.low, high=s.high, batch_size=p.batch_size, ctx=ctx)
        clean_ok = predict(model, x) == y
        robust, x_adv = clean_ok.clone(), x.clone()
        stages = {}

        def stage(name, fn):
            idx = robust.nonzero()[:, 0]
            if idx.numel():
                adv = fn(x[idx], y[idx])
                broke = predict(model, adv) != y[idx]
                robust[idx[broke]] = False
                x_adv[idx[broke]] = adv[broke]
            stages[name] = int(robust.sum())

        stage("apgd-ce", lambda a, b: apgd(model, a, b, eps, steps=p.apgd_steps, loss="ce", restarts=p.restarts, **kw))
        stage("apgd-dlr-t", lambda a, b: apgd(model, a, b, eps, steps=p.apgd_steps, loss="dlr-t",
                                              n_targets=p.n_targets, restarts=p.restarts, **kw))
        white = robust.clone()
        queries = 0
        if p.square_queries and p.norm == "linf" and ctx.target.access.allows(Access.SCORES):
            with ctx.target.budget(None):
                stage("square", lambda a, b: square_linf(ctx.target.scores, a, b, eps, s.low, s.high,
                                                         max_queries=p.square_queries, ctx=ctx)[0])
            queries = ctx.target.spent
        bb_extra = int((white & ~robust).sum())
        checks = list(checks) + [Check(
            "black-box-beats-white-box", bb_extra > max(2, BLACK_BOX_MARGIN * n),
            f"Square broke {bb_extra} of the {int(white.sum())} points the white-box attacks could not "
            f"(limit {BLACK_BOX_MARGIN:.0%} of {n})" if "square" in stages else "no score access or not linf: not run")]
        checks.append(self._more_steps_check(model, x, y, eps, p, kw))
        grid = p.curve or curve_grid(p.eps, p.norm, x[0].numel())
        curve = self._curve(ctx, model, x, y, grid, p, kw, data)
        checks += self._curve_checks(grid, curve, p)
        metrics = accuracy_metrics(clean_ok, robust)
        metrics.insert(2, Metric.rate("robust_accuracy_white_box", int(white.sum()), n))
        for k, v in stages.items():
            metrics.append(Metric.rate(f"robust_after_{k}", v, n))
        status, sev, headline = verdict(metrics[0].value, metrics[1].value, checks,
                                        f"worst case of {' > '.join(stages)} at {p.norm} eps={p.eps:g}")
        for m in metrics[1:]:
            m.reliable = status.value == "ok"
        evidence = self._figures(ctx, model, x, y, x_adv, clean_ok, grid, curve, p)
        return self.finding(ctx, p, status=status, severity=sev, headline=headline, metrics=metrics, checks=checks,
                            evidence=evidence, queries=queries,
                            details={"eps_abs": eps, "input_range": [s.low, s.high],
                                     "curve": [{"eps": e, "robust_accuracy": a, "n": n, "ci": list(ci)}
                                               for e, (a, ci) in zip(grid, curve)]})

    def _more_steps_check(self, model, x, y, eps, p, kw) -> Check:
        short = pgd(model, x, y, eps, steps=p.check_steps, **kw)
        long = pgd(model, x, y, eps, steps=4 * p.check_steps, restarts=2, **kw)
        a_s = float((predict(model, short) == y).float().mean())
        a_l = float((predict(model, long) == y).float().mean())
        return Check("more-steps-help", a_s - a_l > MORE_STEPS_MARGIN,
                     f"PGD robust accuracy {100 * a_s:.1f}% with {p.check_steps} steps, {100 * a_l:.1f}% with "
                     f"{4 * p.check_steps} steps x 2 restarts (limit {100 * MORE_STEPS_MARGIN:.0f} points)")

    def _curve(self, ctx, model, x, y, grid, p, kw, data):
        def point(e, _shared=None):  # independent per eps: the backend may run them elsewhere
            if e == 0:
                k = int((predict(model, x) == y).sum())
            else:
                adv = apgd(model, x, y, abs_eps(e, p.norm, data), steps=p.curve_steps, loss="ce", **kw)
                k = int((predict(model, adv) == y).sum())
            return k / len(y), clopper_pearson(k, len(y))
        return ctx.backend.map(point, grid)

    def _curve_checks(self, grid, curve, p) -> list[Check]:
        accs = [a for a, _ in curve]
        rises = [(grid[i], grid[i + 1]) for i in range(len(accs) - 1) if accs[i + 1] > accs[i] + MONOTONE_MARGIN]
        mono = Check("non-monotone-curve", bool(rises),
                     "robust accuracy rises with eps between " + ", ".join(f"{a:g}->{b:g}" for a, b in rises)
                     if rises else "robust accuracy never rises with eps")
        big = Check("not-zero-at-large-eps", accs[-1] > LARGE_EPS_LIMIT,
                    f"at eps={grid[-1]:g} (covers the whole input range) robust accuracy is {100 * accs[-1]:.1f}% "
                    f"(limit {100 * LARGE_EPS_LIMIT:.0f}%)")
        return [mono, big]

    def _figures(self, ctx, model, x, y, x_adv, clean_ok, grid, curve, p) -> list[str]:
        from ...plots import adversarial_grid, security_curve
        s = ctx.data.space
        ev = []
        path = ctx.evidence_path("security_curve.png")
        security_curve(path, grid, [a for a, _ in curve], [ci[0] for _, ci in curve], [ci[1] for _, ci in curve],
                       norm=p.norm, title=f"Security curve (APGD-CE, {p.curve_steps} steps, n={len(y)})")
        ev.append(ctx.rel(path))
        if ctx.data.modality == "image":
            broken = clean_ok & (predict(model, x_adv) != y)
            idx = torch.cat([broken.nonzero()[:, 0], (clean_ok & ~broken).nonzero()[:, 0]])[:10]  # successes first
            if idx.numel():
                path = ctx.evidence_path("adversarial_examples.png")
                adversarial_grid(path, x[idx], x_adv[idx], y[idx], predict(model, x[idx]), predict(model, x_adv[idx]),
                                 s.low, s.high, title=f"{p.norm} eps={p.eps:g}: clean (top) vs adversarial (bottom)")
                ev.append(ctx.rel(path))
        return ev
