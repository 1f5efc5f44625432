"""Adversarial training: the model is trained on the worst-case inputs of an eps-ball around each training
point, so that the audited attacks meet a model that has already seen them.

- PGD-AT (Madry, Makelov, Schmidt, Tsipras, Vladu 2018, "Towards Deep Learning Models Resistant to
  Adversarial Attacks"): every batch is replaced by its PGD adversarial examples (random start, `steps`
  steps of size 2.5 eps / steps) and the model minimises cross-entropy on them.
- TRADES (Zhang, Yu, Jiao, Xing, El Ghaoui, Jordan 2019, "Theoretically Principled Trade-off between
  Robustness and Accuracy"): cross-entropy on the clean batch plus beta times KL(f(x) || f(x')), x'
  maximising that KL from a start 0.001 away from x.
- Fast AT (Wong, Rice, Kolter 2020, "Fast is better than free: Revisiting adversarial training"): one
  FGSM step of size 1.25 eps from a uniform random start. It can overfit catastrophically (PGD accuracy
  falls to ~0 within an epoch while FGSM accuracy climbs), so after every epoch a 10-step PGD attack runs
  on training points held out of training; when its accuracy falls `overfit_drop` below the best seen,
  training stops and the weights of the best epoch are kept (the paper's early stopping).

Attack points are generated with the network in eval mode (as the TRADES reference code does) and only
input gradients are computed. TRADES forwards the clean and adversarial halves as one batch, so a network
with batch normalisation sees their joint statistics.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from ..core.data import Dataset
from ..core.defense import Defense
from ..core.errors import UserError
from ..core.perturb import ascend, random_start
from ..core.recipe import Recipe
from ..core.registry import register
from ..core.threat import Params

METHODS = ("pgd", "trades", "fast")


@dataclass
class AdversarialBatches:
    """A Recipe batch_transform: each training batch -> its adversarial version (PGD-AT, fast AT) or the
    clean batch with its adversarial twin appended (TRADES; the loss splits them)."""
    method: str
    eps: float          # input units
    norm: str
    low: float
    high: float
    steps: int
    step_size: float    # input units
    feature_low: torch.Tensor | None = None     # tabular data with mixed scales: attack in per-feature [0, 1]
    feature_width: torch.Tensor | None = None

    def __call__(self, model, xb, yb):
        was_training = model.training
        hooks = getattr(model, "disable_hooks", None)   # Opacus: attack queries must not record per-sample grads
        if hooks is not None:
            model.disable_hooks()
        model.eval()
        try:
            if self.feature_low is None:
                return self._attack(model, xb, yb)
            lo, w = self.feature_low, self.feature_width
            z = ((xb - lo) / torch.where(w > 0, w, torch.ones_like(w))).clamp(0, 1)
            za, ya = self._attack(lambda a: model(lo + a * w), z, yb)
            return lo + za * w, ya
        finally:
            model.train(was_training)
            if hooks is not None:
                model.enable_hooks()

    def _attack(self, model, xb, yb):
        kw = dict(eps=self.eps, norm=self.norm, low=self.low, high=self.high, step_size=self.step_size)
        if self.method == "trades":
            with torch.no_grad():
                p_clean = F.softmax(model(xb), 1)
            start = (xb + 0.001 * (self.high - self.low) * torch.randn_like(xb)).clamp(self.low, self.high)
            x_adv = ascend(lambda a: F.kl_div(F.log_softmax(model(a), 1), p_clean, reduction="none").sum(1),
                           xb, start, steps=self.steps, **kw)
            return torch.cat([xb, x_adv]), yb
        start = random_start(xb, self.eps, self.norm, self.low, self.high)
        steps = 1 if self.method == "fast" else self.steps
        x_adv = ascend(lambda a: F.cross_entropy(model(a), yb, reduction="none"), xb, start, steps=steps, **kw)
        return x_adv, yb


@dataclass
class TradesLoss:
    """Recipe loss for TRADES: the logits of [clean; adversarial] against the clean labels."""
    beta: float

    def __call__(self, logits, y):
        n = len(y)
        clean, adv = logits[:n], logits[n:]
        robust = F.kl_div(F.log_softmax(adv, 1), F.softmax(clean, 1), reduction="batchmean")
        return F.cross_entropy(clean, y) + self.beta * robust


def pgd_accuracy(model, x, y, eps: float, norm: str, low: float, high: float, steps: int = 10) -> float:
    """Accuracy under a `steps`-step PGD attack with random start (the overfitting check's probe)."""
    start = random_start(x, eps, norm, low, high)
    x_adv = ascend(lambda a: F.cross_entropy(model(a), y, reduction="none"), x, start, eps, norm, low, high,
                   steps=steps, step_size=2.5 * eps / steps)
    with torch.no_grad():
        return float((model(x_adv).argmax(1) == y).float().mean())


@dataclass
class OverfittingCheck:
    """Fast AT's catastrophic-overfitting check (Wong et al. 2020, section 5.2): a data_filter that holds
    training points out, and an on_epoch hook that attacks them with PGD after every epoch and stops
    training, restoring the best epoch's weights, when PGD accuracy collapses."""
    eps: float
    norm: str
    low: float
    high: float
    n_points: int
    drop: float
    previous_filter: object = None
    feature_low: torch.Tensor | None = None     # mixed-scale tabular data: attack in per-feature [0, 1]
    feature_width: torch.Tensor | None = None
    history: list = field(default_factory=list, repr=False, compare=False)
    fired_epoch: int | None = field(default=None, repr=False, compare=False)
    best_epoch: int | None = field(default=None, repr=False, compare=False)
    _held: tuple = field(default=(), repr=False, compare=False)
    _best_state: dict | None = field(default=None, repr=False, compare=False)

    def hold_out(self, x, y):
        if self.previous_filter is not None:
            x, y = self.previous_filter(x, y)
        n = min(self.n_points, len(x) // 10)
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
        self._held = (x[perm[:n]], y[perm[:n]])
        self.history, self.fired_epoch, self.best_epoch, self._best_state = [], None, None, None
        return x[perm[n:]], y[perm[n:]]

    def __call__(self, epoch: int, model) -> bool:
        was_training = model.training
        model.eval()
        try:
            x, y = self._held
            if self.feature_low is not None:
                lo, w = self.feature_low, self.feature_width
                z = ((x - lo) / torch.where(w > 0, w, torch.ones_like(w))).clamp(0, 1)
                acc = pgd_accuracy(lambda a: model(lo + a * w), z, y, self.eps, self.norm, 0.0, 1.0)
            else:
                acc = pgd_accuracy(model, x, y, self.eps, self.norm, self.low, self.high)
        finally:
            model.train(was_training)
        self.history.append(acc)
        if self.best_epoch is None or acc >= self.history[self.best_epoch]:
            self.best_epoch, self._best_state = epoch, copy.deepcopy(model.state_dict())
            return False
        if acc < self.history[self.best_epoch] - self.drop:
            self.fired_epoch = epoch
            model.load_state_dict(self._best_state)
            return True
        return False

    def describe(self) -> dict:
        probe = f"10-step PGD accuracy on {len(self._held[1]) if self._held else 0} held-out training points"
        if self.fired_epoch is None:
            last = f"{100 * self.history[-1]:.1f}%" if self.history else "n/a"
            text = f"did not fire: {probe} ended at {last} (best {100 * max(self.history, default=0):.1f}%)"
        else:
            text = (f"FIRED: catastrophic overfitting in epoch {self.fired_epoch + 1}: {probe} fell from "
                    f"{100 * self.history[self.best_epoch]:.1f}% (epoch {self.best_epoch + 1}) to "
                    f"{100 * self.history[-1]:.1f}%; training stopped and the weights of epoch "
                    f"{self.best_epoch + 1} kept")
        return {"overfitting_check": text, "overfitting_fired": self.fired_epoch is not None,
                "held_out_pgd_accuracy": [round(a, 4) for a in self.history]}


@dataclass
class _Chain:
    """Two data filters in turn."""
    first: object
    second: object

    def __call__(self, x, y):
        return self.second(*self.first(x, y))


# Training settings for the built-in recipes, chosen on scikit-learn's digits at Linf eps 0.1
# (benchmarks/bench_adv_training.py): adversarial training needs more epochs than plain training.
AT_TRAINING = {
    "mlp": {"epochs": 100, "lr": 1e-3, "batch_size": 64},
    "cnn": {"epochs": 30, "lr": 1e-3, "batch_size": 64},
    "logreg": {"epochs": 100, "lr": 1e-2, "batch_size": 64},
    "tabular-mlp": {"epochs": 100, "lr": 1e-3, "batch_size": 64},
}
RECIPE_KEYS = ("epochs", "lr", "batch_size")


class ATParams(Params):
    method: Literal["pgd", "trades", "fast"] = Field("pgd", description="pgd (Madry et al.) | trades (Zhang et "
                                                     "al.) | fast (FGSM with random start, Wong et al.)")
    eps: float = Field(0.1, gt=0, description="budget as a fraction of the input range (default: the audit's "
                       "--eps)")
    norm: Literal["linf", "l2"] = Field("linf", description="linf | l2 (default: the audit's)")
    steps: int = Field(10, gt=0, description="attack steps per batch (pgd, trades)")
    step_size: float | None = Field(None, gt=0, description="fraction of the input range (default 2.5 eps / "
                                    "steps; fast: 1.25 eps)")
    beta: float = Field(6.0, gt=0, description="TRADES weight of the robustness term")
    epochs: int | None = Field(None, gt=0, description="epochs (default: AT_TRAINING, else the recipe's)")
    lr: float | None = Field(None, gt=0, description="learning rate (default: AT_TRAINING, else the recipe's)")
    batch_size: int | None = Field(None, gt=0, description="batch size (default: AT_TRAINING, else the recipe's)")
    overfit_drop: float = Field(0.2, gt=0, lt=1, description="fast: stop when held-out PGD accuracy falls this "
                                "far below its best")
    overfit_points: int = Field(256, gt=0, description="fast: training points held out for the check")


def at_recipe(recipe: Recipe, p: ATParams, data: Dataset) -> tuple[Recipe, dict]:
    """The recipe with adversarial training applied, and the settings it trains with."""
    if data.modality not in ("image", "tabular"):
        raise UserError(f"adversarial training perturbs continuous inputs; this data is {data.modality}")
    if p.method == "trades" and recipe.wrap is not None:
        raise UserError("adversarial-training method=trades replaces the loss and cannot be combined with "
                        f"a defence that wraps training ({recipe.wrap!r}); use method=pgd")
    if recipe.batch_transform is not None:
        raise UserError(f"adversarial training replaces every training batch and cannot be combined with another "
                        f"batch transform (the recipe already has {recipe.batch_transform!r})")
    s = data.space
    eps = p.eps * (1.0 if s.mixed_scales else s.width)
    if p.norm == "linf" and p.eps >= 1:
        raise UserError(f"adversarial-training eps {p.eps:g} covers the whole input range; give a fraction below 1")
    default_step = 1.25 * eps if p.method == "fast" else 2.5 * eps / p.steps
    step = p.step_size * (1.0 if s.mixed_scales else s.width) if p.step_size else default_step
    defaults = AT_TRAINING.get(recipe.name, {})
    changes = {k: getattr(p, k) if getattr(p, k) is not None else defaults.get(k, getattr(recipe, k))
               for k in RECIPE_KEYS}
    if recipe.wrap is not None:
        # a wrapping defence (DP-SGD) already fixed the training run and accounts for exactly its steps
        given = [k for k in RECIPE_KEYS if getattr(p, k) is not None]
        if given:
            raise UserError(f"adversarial-training {', '.join(given)}: the training run is set by the defence that "
                            f"wraps it ({type(recipe.wrap).__name__}), which accounts for it; set them there")
        changes, defaults = {k: getattr(recipe, k) for k in RECIPE_KEYS}, {}
    if s.mixed_scales:   # eps is a fraction of each feature's range, as the audit measures it
        batches = AdversarialBatches(p.method, eps, p.norm, 0.0, 1.0, p.steps, step, s.feature_low,
                                     s.feature_high - s.feature_low)
    else:
        batches = AdversarialBatches(p.method, eps, p.norm, s.low, s.high, p.steps, step)
    hooks = {"batch_transform": batches}
    if p.method == "trades":
        hooks["loss"] = TradesLoss(p.beta)
    if p.method == "fast":
        check = OverfittingCheck(eps, p.norm, s.low, s.high, p.overfit_points, p.overfit_drop, recipe.data_filter,
                                 batches.feature_low, batches.feature_width)
        hooks.update(data_filter=check.hold_out, on_epoch=check)
    tag = {"pgd": f"pgd-at({p.steps} steps)", "trades": f"trades(beta={p.beta:g})", "fast": "fast-at"}[p.method]
    rec = recipe.with_(name=f"{recipe.name}+{tag}({p.norm} eps={p.eps:g})", **changes, **hooks)
    facts = {"method": p.method, "norm": p.norm, "eps": p.eps, "eps_abs": eps, "step_size_abs": step,
             "steps": 1 if p.method == "fast" else p.steps, "training": changes,
             "settings": "set by the wrapping defence" if recipe.wrap is not None else
             "adversarial-training defaults for this recipe" if defaults else "the recipe's own"}
    if p.method == "trades":
        facts["beta"] = p.beta
    return rec, facts


@register
class AdversarialTraining(Defense):
    """Adversarial training: PGD-AT (Madry et al. 2018), TRADES (Zhang et al. 2019), fast AT (Wong et al. 2020)."""

    name = "adversarial-training"
    title = "Adversarial training"
    kind = "training"
    mitigates = ("whitebox-cascade", "hopskipjump")
    Params = ATParams
    network_only = "trains networks on adversarial examples found through their gradients"
    sweepable = ("eps", "beta", "epochs")

    def defend_recipe(self, recipe: Recipe, p: ATParams, data: Dataset) -> tuple[Recipe, dict]:
        return at_recipe(recipe, p, data)

    def after_training(self, recipe: Recipe, p: ATParams) -> dict:
        check = recipe.on_epoch
        return check.describe() if isinstance(check, OverfittingCheck) else {}

    def evaluate(self, subject, hardened, p: ATParams, ctx) -> dict:
        """The price in training time: the same recipe trained plainly, timed on this machine."""
        import time
        data = ctx.data
        plain = subject.recipe.with_(**hardened.facts[self.name]["training"])
        t0 = time.monotonic()
        plain.fit(data.x_train, data.y_train, data.n_classes, seed=ctx.seed)
        seconds = time.monotonic() - t0
        return {"plain_training_s": seconds, "training_time_ratio": hardened.training_s / max(seconds, 1e-9)}
