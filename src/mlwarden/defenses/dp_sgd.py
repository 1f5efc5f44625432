"""DP-SGD (Abadi et al. 2016, "Deep Learning with Differential Privacy") through Opacus: per-example
gradient clipping and Gaussian noise, Poisson sampling of batches. The noise multiplier is calibrated to
the target epsilon with the PRV accountant, or RDP when PRV fails (privacy/accountant.py).

The unit of privacy is one training example as the recipe sees it (an image, a table row, or for the
character language model one window of text): a secret that occurs in k examples is protected only at
group level, roughly k * epsilon."""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import Literal

from torch import nn

from pydantic import Field

from ..core.data import Dataset
from ..core.defense import Defense
from ..core.errors import UserError
from ..core.recipe import Recipe
from ..core.registry import register
from ..core.threat import Params
from ..privacy.accountant import noise_for
from ..privacy.one_run_audit import one_run_audit


@dataclass(frozen=True)
class Calibration:
    """How one DP-SGD training run was set up: what the accountant certifies epsilon for."""
    noise_multiplier: float
    accountant: str
    sample_rate: float
    steps: int
    max_grad_norm: float
    target_epsilon: float
    delta: float
    grad_sample_mode: str


@dataclass
class DPSGD:
    """A Recipe wrap: (model, optimizer, loader) -> their Opacus-private versions."""
    epsilon: float
    delta: float
    epochs: int
    max_grad_norm: float = 1.0
    accountant: str = "prv"
    mode: str = "ghost"  # Opacus fast gradient clipping: per-sample norms without per-sample gradients
    noise_multiplier: float | None = None  # set: use it as is (no calibration to epsilon)
    calibration: Calibration | None = field(default=None, repr=False, compare=False)

    def __call__(self, model, optimizer, loader):
        sample_rate = 1 / len(loader)
        steps = self.epochs * len(loader)
        if self.noise_multiplier is not None:
            noise, used = self.noise_multiplier, "rdp"
        else:
            noise, used = noise_for(self.epsilon, self.delta, sample_rate, steps, self.accountant)
        # Opacus's hooks fire this when inputs need no gradient, which is every DP-SGD step here
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self._private(model, optimizer, loader, noise, used, sample_rate, steps)

    def _private(self, model, optimizer, loader, noise, used, sample_rate, steps):
        from opacus import PrivacyEngine

        from ..privacy.ghost_norms import use_fast_norms
        engine = PrivacyEngine(accountant=used)
        loss = None
        if self.mode == "ghost":
            loss_fn = nn.CrossEntropyLoss()
            model, optimizer, loss, loader = engine.make_private(
                module=model, optimizer=optimizer, data_loader=loader, criterion=loss_fn, noise_multiplier=noise,
                max_grad_norm=self.max_grad_norm, poisson_sampling=True, grad_sample_mode="ghost")
            use_fast_norms(model)   # embedding norms without Opacus's row-wise unique: the same norms, bitwise
        else:
            model, optimizer, loader = engine.make_private(
                module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=noise,
                max_grad_norm=self.max_grad_norm, poisson_sampling=True, grad_sample_mode=self.mode)
        self._engine = engine
        self.calibration = Calibration(noise, used, sample_rate, steps, self.max_grad_norm, self.epsilon, self.delta,
                                       self.mode)
        return (model, optimizer, loader) if loss is None else (model, optimizer, loader, loss)

    def spent(self) -> float:
        """Epsilon the accountant certifies for the training run that just ended."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(self._engine.get_epsilon(self.delta))


class _Fixed:
    """A factory whose networks have Opacus-incompatible layers replaced (BatchNorm -> GroupNorm, ...)."""

    def __init__(self, factory):
        self.factory = factory

    def __call__(self, input_shape, n_classes):
        from opacus.validators import ModuleValidator
        return ModuleValidator.fix(self.factory(input_shape, n_classes))

    def __repr__(self):
        return f"opacus-fixed({getattr(self.factory, '__qualname__', repr(self.factory))})"


def incompatible_layers(model: nn.Module) -> list[str]:
    from opacus.validators import ModuleValidator
    return [str(e) for e in ModuleValidator.validate(model, strict=False)]


def dp_recipe(recipe: Recipe, input_shape, n_classes: int, n_train: int, epsilon: float,
              delta: float | None = None, max_grad_norm: float = 1.0, accountant: str = "prv") -> tuple[Recipe, dict]:
    """The recipe with DP-SGD applied, and notes on what had to change. delta defaults to 1/(10 n)."""
    if epsilon <= 0:
        raise UserError(f"--epsilon must be positive, got {epsilon:g}")
    delta = delta if delta is not None else 1.0 / (10 * n_train)
    if not 0 < delta < 1.0 / n_train:
        raise UserError(f"--delta {delta:g} must be in (0, 1/n) = (0, {1.0 / n_train:.3g}) for n = {n_train} "
                        "training examples; a larger delta allows leaking whole records")
    notes = {"delta": delta, "fixed_layers": []}
    problems = incompatible_layers(recipe.make_model(input_shape, n_classes))
    if problems:
        fixed = _Fixed(recipe.factory)
        remaining = incompatible_layers(fixed(input_shape, n_classes))
        if remaining:
            raise UserError("the recipe's network has layers DP-SGD cannot train and Opacus cannot replace: "
                            + "; ".join(remaining))
        recipe = recipe.with_(factory=fixed)
        notes["fixed_layers"] = problems
    wrap = DPSGD(epsilon, delta, recipe.epochs, max_grad_norm, accountant)
    dp = recipe.with_(name=f"{recipe.name}+dp-sgd(eps={epsilon:g})", wrap=wrap)
    _trial_step(dp, input_shape, n_classes)
    return dp, notes


def _trial_step(recipe: Recipe, input_shape, n_classes: int) -> None:
    """One DP-SGD step on 8 zero inputs, so a layer without a per-sample gradient rule fails here, in a
    second, with its name, rather than deep inside the real training run."""
    import torch
    x = torch.zeros((8,) + tuple(input_shape))
    y = torch.zeros(8, dtype=torch.int64)
    probe = DPSGD(10.0, 1e-5, 1, recipe.wrap.max_grad_norm, "rdp", recipe.wrap.mode, noise_multiplier=1.0)
    try:
        recipe.with_(epochs=1, batch_size=4, wrap=probe, data_filter=None).fit(x, y, n_classes, seed=0)
    except Exception as e:  # noqa: BLE001 - any failure here is the network's incompatibility with DP-SGD
        raise UserError(f"the recipe's network cannot be trained with DP-SGD ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:200]}); use layers Opacus supports") from None


# DP-appropriate training for the built-in recipes: larger batches, a larger learning rate and fewer
# passes learn more under noise than the plain settings (Ponomareva et al. 2023, "How to DP-fy ML",
# section 5). Chosen once on scikit-learn's digits, a public benchmark (benchmarks/bench_dp_utility.py),
# never searched on the user's data, so they cost no privacy (Papernot & Steinke 2022 account for
# searches on private data). A user's own recipe keeps its settings; --param overrides either.
DP_TRAINING = {
    "cnn": {"batch_size": 512, "epochs": 40, "lr": 1e-2, "optimizer": "adam", "max_grad_norm": 4.0},
    "mlp": {"batch_size": 256, "epochs": 30, "lr": 1e-2, "optimizer": "adam", "max_grad_norm": 1.0},
    "logreg": {"batch_size": 256, "epochs": 30, "lr": 1e-2, "optimizer": "adam", "max_grad_norm": 1.0},
    "tabular-mlp": {"batch_size": 256, "epochs": 30, "lr": 1e-2, "optimizer": "adam", "max_grad_norm": 1.0},
}
RECIPE_KEYS = ("batch_size", "epochs", "lr", "optimizer")


class DPParams(Params):
    epsilon: float = Field(8.0, gt=0, description="target epsilon")
    delta: float | None = Field(None, gt=0, lt=1, description="target delta (default 1/(10 n))")
    max_grad_norm: float | None = Field(None, gt=0, description="per-example clipping norm (default: "
                                        "DP_TRAINING for built-in recipes, else 1)")
    accountant: Literal["prv", "rdp"] = Field("prv", description="prv (falls back to rdp when it fails) | rdp")
    lr: float | None = Field(None, gt=0, description="learning rate (default: DP_TRAINING, else the recipe's)")
    epochs: int | None = Field(None, gt=0, description="epochs (default: DP_TRAINING, else the recipe's)")
    batch_size: int | None = Field(None, gt=0, description="expected batch size (default: DP_TRAINING, else "
                                   "the recipe's)")
    optimizer: Literal["adam", "sgd"] | None = Field(None, description="default: DP_TRAINING, else the recipe's")
    one_run_canaries: int = Field(500, ge=100, description="canaries of the one-run privacy audit")


@register
class DPSGDDefense(Defense):
    """DP-SGD (Abadi et al. 2016) through Opacus: clipping and noise calibrated to a target epsilon."""

    name = "dp-sgd"
    title = "Differentially private training (DP-SGD)"
    kind = "training"
    mitigates = ("data-extraction",)
    Params = DPParams
    sweepable = ("epsilon",)
    extras = (("opacus", "dp", "DP-SGD"),)
    network_only = "trains networks with Opacus (per-example gradients clipped and noised)"

    def defend_recipe(self, recipe: Recipe, p: DPParams, data: Dataset) -> tuple[Recipe, dict]:
        self.require_extras()
        defaults = DP_TRAINING.get(recipe.name, {})
        changes = {k: getattr(p, k) if getattr(p, k) is not None else defaults.get(k, getattr(recipe, k))
                   for k in RECIPE_KEYS}
        clip = p.max_grad_norm or defaults.get("max_grad_norm", 1.0)
        rec, notes = dp_recipe(recipe.with_(**changes), data.input_shape, data.n_classes, len(data.x_train),
                               p.epsilon, p.delta, clip, p.accountant)
        return rec, {"delta": notes["delta"], "fixed_layers": notes["fixed_layers"], "training": changes,
                     "settings": "DP defaults for this recipe" if defaults else "the recipe's own",
                     "unit": "one window of text (context + next character)" if data.modality == "text"
                     else "one training example"}

    def after_training(self, recipe: Recipe, p: DPParams) -> dict:
        return {**asdict(recipe.wrap.calibration), "epsilon_spent": recipe.wrap.spent()}

    def evaluate(self, subject, hardened, p: DPParams, ctx) -> dict:
        """The one-run privacy audit (Steinke et al. 2023) of both training pipelines: an empirical lower
        bound on epsilon that must never exceed the accountant's."""
        data = ctx.data
        delta = hardened.facts[self.name]["delta"]
        out = {}
        for name, rec in (("before", subject.recipe), ("after", hardened.recipe)):
            out[name] = one_run_audit(rec, data.x_train, data.y_train, data.x_test, data.y_test, data.n_classes,
                                      delta=delta, low=data.space.low, high=data.space.high,
                                      integer_inputs=data.modality == "text", m=p.one_run_canaries,
                                      seed=ctx.seed).as_dict()
        spent = hardened.facts[self.name]["epsilon_spent"]
        bug = out["after"]["epsilon_lower_bound"] > spent + 1e-9
        accountant = hardened.facts[self.name]["accountant"].upper()
        # what one privacy unit is: an example, or a window of text (facts saved before it was recorded: examples)
        unit = hardened.facts[self.name].get("unit", "one training example")
        guarantee = (f"({spent:.3g}, {delta:.2g})-DP per {unit} by the {accountant} accountant; the one-run audit's "
                     f"95% lower bound on epsilon is {out['after']['epsilon_lower_bound']:.3g} (it must not exceed "
                     f"{spent:.3g})" + (" CHECK FAILED" if bug else ""))
        return {"one_run_audit": out, "pipeline_bug": bool(bug), "guarantee": guarantee}
