"""Gradient poisoning of a linear model (Biggio, Nelson & Laskov 2012, "Poisoning attacks against support
vector machines", ICML; the implicit-gradient form of Mei & Zhu 2015, "Using machine teaching to identify
optimal training-set attacks on machine learners", and Koh & Liang 2017).

Threat model: the attacker adds a few labelled points of its choosing to the training set of a binary
linear classifier (a scikit-learn logistic regression or linear SVM, retrained as a clone of itself on the
poisoned set) and wants the most test error. Each poison starts as a training point with the opposite
label; all poisons then climb the validation loss together: the model trained with them is the optimum
theta*(X_p) of an L2-regularised logistic loss (a smooth surrogate of the victim), and by the implicit
function theorem dL_val/dX_p = -(H^-1 grad_theta L_val)^T d(grad_theta L_train)/dX_p, computed with one
linear solve and one double-backward pass per step; poisons stay inside the input range. Measured: the
victim's test error against the number of poisons, beside the same number of plain label flips."""
from __future__ import annotations

from dataclasses import replace
from typing import Annotated

import torch
from pydantic import Field

from ...core import measure, severity
from ...core.finding import Finding, Metric, Severity, Status
from ...core.registry import register
from ...core.target import Access
from ...core.threat import Context, Params, Threat
from .label_flipping import REMEDY


class GradientParams(Params):
    poisons: list[Annotated[int, Field(ge=1)]] = Field([5, 10, 20, 40], min_length=1)
    steps: int = Field(60, ge=1, le=1000, description="gradient-ascent steps on all poisons together")
    step_size: float = Field(0.05, gt=0, description="as a fraction of the input range, per step")
    validation: int = Field(200, ge=20, description="attacker's validation points (its own population data)")


def _fit_lr(x: torch.Tensor, y: torch.Tensor, C: float, w0=None) -> torch.Tensor:
    """theta = (w, b) minimising C * sum(logloss) + |w|^2 / 2 (scikit-learn's objective), by L-BFGS."""
    theta = torch.zeros(x.shape[1] + 1, dtype=torch.float64) if w0 is None else w0.clone()
    theta.requires_grad_(True)
    opt = torch.optim.LBFGS([theta], lr=1, max_iter=200, tolerance_grad=1e-9, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = _train_loss(theta, x, y, C)
        loss.backward()
        return loss
    opt.step(closure)
    return theta.detach()


def _train_loss(theta, x, y, C):
    z = x @ theta[:-1] + theta[-1]
    return C * torch.nn.functional.binary_cross_entropy_with_logits(z, y, reduction="sum") + \
        0.5 * (theta[:-1] ** 2).sum()


def _val_loss(theta, x, y):
    return torch.nn.functional.binary_cross_entropy_with_logits(x @ theta[:-1] + theta[-1], y)


def biggio_poisons(x: torch.Tensor, y: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor, n: int, C: float,
                   steps: int, step: float, low: float, high: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n poison points (and their labels) that raise the validation loss of the L2 logistic regression
    trained on the data plus them; x, x_val flat float64, y in {0, 1}."""
    g = torch.Generator().manual_seed(seed)
    start = torch.randperm(len(x), generator=g)[:n]
    xp, yp = x[start].clone(), 1.0 - y[start]          # a training point with the other label
    theta = None
    for _ in range(steps):
        xa, ya = torch.cat([x, xp]), torch.cat([y, yp])
        theta = _fit_lr(xa, ya, C, theta)
        th = theta.clone().requires_grad_(True)
        gval = torch.autograd.grad(_val_loss(th, x_val, y_val), th)[0]
        hess = torch.autograd.functional.hessian(lambda t: _train_loss(t, xa, ya, C), theta)
        v = torch.linalg.solve(hess + 1e-8 * torch.eye(len(theta), dtype=theta.dtype), gval)
        xq = xp.clone().requires_grad_(True)
        th = theta.clone().requires_grad_(True)
        gtrain = torch.autograd.grad(_train_loss(th, torch.cat([x, xq]), ya, C), th, create_graph=True)[0]
        grad_x = -torch.autograd.grad(gtrain @ v, xq)[0]
        norm = grad_x.norm(dim=1, keepdim=True).clamp_min(1e-12)
        xp = (xp + step * (high - low) * grad_x / norm).clamp(low, high).detach()
    return xp, yp


@register
class GradientPoisoning(Threat):
    """Biggio et al. 2012 gradient poisoning of a binary linear scikit-learn model."""

    name = "gradient-poisoning"
    family = "model-corruption"
    title = "Poison points crafted by gradient ascent on a linear model's validation loss"
    needs = Access.LABELS
    modalities = ("tabular", "image")
    atlas = ["AML.T0020"]
    Params = GradientParams
    remedy = REMEDY
    in_default_audit = False

    def skip_reason(self, ctx: Context) -> str | None:
        est = getattr(ctx.target, "estimator", None)
        if est is None or not hasattr(est, "coef_") or len(getattr(est, "classes_", [])) != 2:
            return "applies to binary linear scikit-learn models (logistic regression, linear SVM), retrained as a clone"
        return super().skip_reason(ctx)

    def run(self, ctx: Context, p: GradientParams) -> Finding:
        from sklearn.base import clone
        est, data = ctx.target.estimator, ctx.data
        flat = lambda t: t.reshape(len(t), -1).double()  # noqa: E731
        x, y = flat(data.x_train), data.y_train.double()
        own = torch.randperm(len(x), generator=torch.Generator().manual_seed(ctx.seed))
        val = own[:min(p.validation, len(x) // 3)]
        C = float(getattr(est, "C", 1.0))
        lo, hi = data.space.low, data.space.high

        def error(xp=None, yp=None):
            xa = x if xp is None else torch.cat([x, xp])
            ya = y if yp is None else torch.cat([y, yp])
            victim = clone(est).fit(xa.numpy(), ya.numpy().astype(int))
            pred = torch.as_tensor(victim.predict(flat(data.x_test).numpy()))
            wrong = pred != data.y_test
            return Metric.rate("test error", int(wrong.sum()), len(wrong)), ~wrong

        clean, ok_clean = error()
        rows, metrics, worst = [], [replace(clean, name="clean: test error")], None
        g = torch.Generator().manual_seed(ctx.seed + 1)
        for n in sorted(p.poisons):
            ctx.check_time()
            xp, yp = biggio_poisons(x, y, x[val], y[val], n, C, p.steps, p.step_size, lo, hi, ctx.seed)
            err, ok = error(xp, yp)
            flips = torch.randperm(len(x), generator=g)[:n]
            base, _ = error(x[flips], 1.0 - y[flips])        # the same number of plain label flips
            d = measure.paired_difference(ok_clean, ok)
            rows.append({"poisons": n, "share of training set": f"{100 * n / len(x):.1f}%",
                         "test error": err.text(), "with as many label flips": base.text(),
                         "change (points, 95% CI)": f"{100 * -d[0]:+.1f} ({100 * -d[2]:+.1f} to {100 * -d[1]:+.1f})"})
            metrics += [replace(err, name=f"{n} poisons: test error"),
                        replace(base, name=f"{n} label flips: test error")]
            worst = (n, err, -d[2])
        n, err, rise = worst
        sev = severity.POISONING.grade(rise) if rise > 0 else Severity.LOW
        headline = (f"{n} poison points ({100 * n / len(x):.1f}% of the training set) raise the test error of "
                    f"{type(est).__name__} from {100 * clean.value:.1f}% to {err.text()}")
        return self.finding(ctx, p, status=Status.OK, severity=sev, headline=headline, metrics=metrics,
                            details={"headline_metric": f"{n} poisons: test error", "table": rows,
                                     "notes": [f"Poisons crafted on an L2 logistic regression surrogate with the "
                                               f"victim's C = {C:g}, {p.steps} steps; the victim is a clone of "
                                               f"{type(est).__name__} retrained on the poisoned set; the attacker's "
                                               f"validation set is {len(val)} of its own points."]})

