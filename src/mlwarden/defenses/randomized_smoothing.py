"""Randomized smoothing (Cohen, Rosenfeld, Kolter 2019, "Certified Adversarial Robustness via Randomized
Smoothing"): the smoothed classifier g(x) = argmax_c P(f(x + N(0, sigma^2 I)) = c) is certifiably robust
in L2: if the top class has probability at least pA > 1/2, g is constant within radius sigma * Phi^-1(pA).

The base network trains with Gaussian noise augmentation at sigma (a Recipe batch_transform). `predict`
(the paper's PREDICT) draws n noisy copies and abstains unless a binomial test separates the top two
classes at level alpha; `certify` (CERTIFY) picks the class with n0 draws, then bounds pA from below
with n fresh draws (one-sided Clopper-Pearson) and returns the radius, or abstains when the bound is
below 1/2. With n draws no radius above sigma * Phi^-1(alpha^(1/n)) can be certified.

The audits attack the *soft* smoothed classifier (the mean softmax over noise draws, Salman et al. 2019)
with EOT over the noise, which is the attack adapted to this defence; an abstention counts as an error.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from pydantic import Field
from scipy.stats import binomtest, norm
from torch import nn

from ..core.data import Dataset
from ..core.defense import Defense
from ..core.device import device_of, on_its_device
from ..core.errors import UserError
from ..core.recipe import Recipe
from ..core.registry import register
from ..core.stats import clopper_pearson, difference_interval, lower_bound
from ..core.target import Target, TorchTarget
from ..core.threat import Params

ABSTAIN = -1


@dataclass
class GaussianNoise:
    """Recipe batch_transform: Gaussian noise augmentation at sigma (input units)."""
    sigma: float

    def __call__(self, model, xb, yb):
        return xb + self.sigma * torch.randn_like(xb), yb


@torch.no_grad()
def sample_counts(model, x: torch.Tensor, sigma: float, n: int, n_classes: int, chunk: int = 20000) -> torch.Tensor:
    """For each point, how often each class wins over n Gaussian draws: (len(x), n_classes). The draws and
    the forward passes happen where the model is (a GPU under --device cuda); the counts come back here."""
    device = device_of(model)
    counts = torch.zeros(len(x), n_classes, dtype=torch.long)
    per = max(1, chunk // max(n, 1))
    for i in range(0, len(x), per):
        xb = x[i:i + per].to(device)
        left = n
        while left:
            m = min(left, max(1, chunk // len(xb)))
            rep = xb.repeat_interleave(m, 0)
            labels = model(rep + sigma * torch.randn_like(rep)).argmax(1).view(len(xb), m)
            counts[i:i + per] += torch.nn.functional.one_hot(labels, n_classes).sum(1).cpu()
            left -= m
    return counts


def predict(model, x, sigma: float, n: int, n_classes: int, alpha: float = 0.001) -> torch.Tensor:
    """Cohen et al.'s PREDICT: the top class, or ABSTAIN when a two-sided binomial test cannot tell the top
    two apart at level alpha (the answer is wrong with probability at most alpha)."""
    counts = sample_counts(model, x, sigma, n, n_classes)
    top2 = counts.topk(2, dim=1)
    out = top2.indices[:, 0].clone()
    for i, (na, nb) in enumerate(top2.values.tolist()):
        if binomtest(na, na + nb, 0.5).pvalue > alpha:
            out[i] = ABSTAIN
    return out


def certify(model, x, sigma: float, n0: int, n: int, n_classes: int, alpha: float = 0.001
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Cohen et al.'s CERTIFY: (label or ABSTAIN, certified L2 radius) per point."""
    guess = sample_counts(model, x, sigma, n0, n_classes).argmax(1)
    counts = sample_counts(model, x, sigma, n, n_classes)
    labels, radii = guess.clone(), torch.zeros(len(x))
    for i, c in enumerate(guess.tolist()):
        pa = lower_bound(int(counts[i, c]), n, alpha)
        if pa < 0.5:
            labels[i] = ABSTAIN
        else:
            radii[i] = sigma * float(norm.ppf(pa))
    return labels, radii


def max_radius(sigma: float, n: int, alpha: float) -> float:
    """The largest radius n draws can certify: every draw agreeing gives pA >= alpha^(1/n)."""
    return sigma * float(norm.ppf(alpha ** (1 / n)))


class SoftSmoothed(nn.Module):
    """The soft smoothed classifier: log of the mean softmax of the base network over `draws` noise draws.
    Random on every call, so the audit's attacks apply EOT to it."""

    def __init__(self, base: nn.Module, sigma: float, draws: int = 8):
        super().__init__()
        self.base, self.sigma, self.draws = base, sigma, draws

    def forward(self, x):
        rep = x.repeat_interleave(self.draws, 0)
        p = self.base(rep + self.sigma * torch.randn_like(rep)).softmax(1)
        return p.view(len(x), self.draws, -1).mean(1).clamp_min(1e-12).log()


class SmoothedTarget(TorchTarget):
    """The defended model as the audit sees it: white-box access to the soft smoothed classifier; labels
    are Cohen's PREDICT with abstention (ABSTAIN never equals a true label, so it counts as an error)."""

    def __init__(self, base: nn.Module, sigma: float, n: int, alpha: float, n_classes: int, input_shape,
                 access, name: str, draws: int = 8):
        super().__init__(SoftSmoothed(base, sigma, draws), n_classes, input_shape, access, name)
        self.base, self.sigma, self.n, self.alpha = base, sigma, n, alpha

    def _labels(self, x):
        return predict(self.base, x, self.sigma, self.n, self.n_classes, self.alpha)


def eot_pgd_l2(model, x, y, eps: float, steps: int, low: float, high: float, eot: int = 4) -> torch.Tensor:
    """PGD in L2 on the soft smoothed classifier with EOT (averaged gradients over `eot` calls)."""
    from ..core.perturb import ascend, random_start
    import torch.nn.functional as F

    def loss(a):
        return sum(F.nll_loss(model(a), y, reduction="none") for _ in range(eot)) / eot
    return ascend(loss, x, random_start(x, eps, "l2", low, high), eps, "l2", low, high, steps=steps,
                  step_size=2.5 * eps / steps)


# Noise-augmented training needs more passes than plain training for the small built-in networks (on
# digits at sigma 0.25 the MLP certifies 50.7% at radius 0.5 after 40 epochs, 54.9% after 100).
SMOOTHING_TRAINING = {"mlp": {"epochs": 100}, "tabular-mlp": {"epochs": 100}, "logreg": {"epochs": 100}}


class SmoothingParams(Params):
    sigma: float = Field(0.25, gt=0, description="noise level, a fraction of the input range")
    n0: int = Field(100, gt=0, description="draws that select the class to certify")
    n: int = Field(1000, gt=0, description="draws that bound its probability (and that PREDICT uses)")
    alpha: float = Field(0.001, gt=0, lt=0.5, description="failure probability of each certificate")
    n_points: int = Field(200, gt=0, description="test points certified")
    radii: list[float] = Field([0.0, 0.25, 0.5, 0.75, 1.0], description="L2 radii (fractions of the range)")
    attack_steps: int = Field(20, gt=0, description="EOT-PGD steps of the empirical attack at each radius")
    draws: int = Field(8, gt=0, description="noise draws per call of the soft classifier the audits attack")
    eps: float = Field(0.1, gt=0, description="the audit's Linf eps, set beside the certified radii (default: "
                       "the audit's)")
    epochs: int | None = Field(None, gt=0, description="epochs of noise-augmented training (default: "
                               "SMOOTHING_TRAINING, else the recipe's)")


@register
class RandomizedSmoothing(Defense):
    """Randomized smoothing (Cohen et al. 2019): Gaussian-noise training, certified L2 radius, abstention."""

    name = "randomized-smoothing"
    title = "Randomized smoothing"
    kind = "training"
    mitigates = ("whitebox-cascade",)
    Params = SmoothingParams
    network_only = "trains networks under Gaussian noise"
    profiles = {"standard": {"n": 10000, "n_points": 450}, "thorough": {"n": 100000, "n_points": 1000}}
    sweepable = ("sigma",)

    def defend_recipe(self, recipe: Recipe, p: SmoothingParams, data: Dataset) -> tuple[Recipe, dict]:
        if data.modality not in ("image", "tabular"):
            raise UserError(f"randomized smoothing adds Gaussian noise to continuous inputs; this data is "
                            f"{data.modality}")
        if recipe.batch_transform is not None:
            raise UserError(f"the recipe already transforms its batches ({recipe.batch_transform!r}): "
                            "randomized smoothing trains with noise and cannot be combined with it")
        if data.space.mixed_scales:
            raise UserError("randomized smoothing certifies an L2 radius in one scale, and these features have "
                            "ranges of their own: scale them to a common range first (min-max to [0, 1], as the "
                            "built-in tabular data sets are)")
        sigma = p.sigma * data.space.width
        changes = {"epochs": p.epochs or SMOOTHING_TRAINING.get(recipe.name, {}).get("epochs", recipe.epochs)}
        rec = recipe.with_(name=f"{recipe.name}+gaussian-noise(sigma={p.sigma:g})", batch_transform=GaussianNoise(sigma),
                           **changes)
        return rec, {"sigma": p.sigma, "sigma_abs": sigma, "epochs": changes["epochs"], "n0": p.n0, "n": p.n, "alpha": p.alpha,
                     "max_certifiable_radius": max_radius(p.sigma, p.n, p.alpha),
                     "note": f"with n={p.n} draws no L2 radius above {max_radius(p.sigma, p.n, p.alpha):.3g} "
                             "(fraction of the range) can be certified"}

    def defend_target(self, target: Target, p: SmoothingParams, ctx) -> tuple[Target, dict]:
        data = ctx.data
        base = target.module
        smoothed = SmoothedTarget(base, p.sigma * data.space.width, p.n, p.alpha, data.n_classes, data.input_shape,
                                  target.access, f"{target.name}, smoothed (sigma={p.sigma:g}, n={p.n})", p.draws)
        return smoothed, {"per_query_forward_passes": p.n, "served_as": "PREDICT with abstention (label -1)"}

    def evaluate(self, subject, hardened, p: SmoothingParams, ctx) -> dict:
        """Certified accuracy against L2 radius, the Linf radius it implies, and the empirical accuracy of
        the smoothed classifier (PREDICT, abstentions are errors) under EOT-PGD at the same radii."""
        data, s = ctx.data, ctx.data.space
        base, sigma = hardened.target.base, p.sigma * s.width
        g = torch.Generator().manual_seed(ctx.seed)
        idx = torch.randperm(len(data.x_test), generator=g)[:p.n_points]
        x, y = data.x_test[idx], data.y_test[idx]
        torch.manual_seed(ctx.seed)
        labels, radii = certify(base, x, sigma, p.n0, p.n, data.n_classes, p.alpha)
        d = x[0].numel()
        rows = []
        soft = on_its_device(SoftSmoothed(base, sigma, p.draws))   # the network stays where the audit put it
        for r in p.radii:
            ok_cert = (labels == y) & (radii >= r * s.width)
            if r == 0:
                adv = x
            else:
                adv = eot_pgd_l2(soft, x, y, r * s.width, p.attack_steps, s.low, s.high)
            ok_emp = predict(base, adv, sigma, p.n, data.n_classes, p.alpha) == y
            kc, ke, n = int(ok_cert.sum()), int(ok_emp.sum()), len(y)
            diff = difference_interval(ke, n, kc, n)   # certified - empirical
            rows.append({"radius": r, "linf_radius": r / math.sqrt(d), "n": n,
                         "certified": kc / n, "certified_ci": list(clopper_pearson(kc, n)),
                         "empirical": ke / n, "empirical_ci": list(clopper_pearson(ke, n)),
                         "certified_exceeds_empirical": diff[1] > 0})
        bug = any(row["certified_exceeds_empirical"] for row in rows)
        plot = ctx.file("plots/" + ctx.point_name("certified", ".png", f"-sigma={p.sigma:g}"))
        from ..plots import certified_curve
        certified_curve(plot, rows, sigma=p.sigma, n=p.n)
        return {"certified": rows, "abstained": int((labels == ABSTAIN).sum()), "n_points": len(y),
                "audit_linf_eps": p.eps, "audit_linf_eps_as_l2": p.eps * math.sqrt(d),
                "max_certifiable_radius": max_radius(p.sigma, p.n, p.alpha), "dimension": d,
                "pipeline_bug": bug, "plots": [plot.relative_to(ctx.out_dir).as_posix()]}
