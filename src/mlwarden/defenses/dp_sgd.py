"""DP-SGD (Abadi et al. 2016, "Deep Learning with Differential Privacy") through Opacus: per-example
gradient clipping and Gaussian noise, Poisson sampling of batches. The noise multiplier is calibrated to
the target epsilon with the PRV accountant, or RDP when PRV fails (privacy/accountant.py).

The unit of privacy is one training example as the recipe sees it (an image, a table row, or for the
character language model one window of text): a secret that occurs in k examples is protected only at
group level, roughly k * epsilon."""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

from torch import nn

from ..core.errors import UserError
from ..core.recipe import Recipe
from ..privacy.accountant import noise_for


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
    result: dict = field(default_factory=dict, repr=False, compare=False)

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
        engine = PrivacyEngine(accountant=used)
        loss = None
        if self.mode == "ghost":
            loss_fn = nn.CrossEntropyLoss()
            model, optimizer, loss, loader = engine.make_private(
                module=model, optimizer=optimizer, data_loader=loader, criterion=loss_fn, noise_multiplier=noise,
                max_grad_norm=self.max_grad_norm, poisson_sampling=True, grad_sample_mode="ghost")
        else:
            model, optimizer, loader = engine.make_private(
                module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=noise,
                max_grad_norm=self.max_grad_norm, poisson_sampling=True, grad_sample_mode=self.mode)
        self._engine = engine
        self.result = {"noise_multiplier": noise, "accountant": used, "sample_rate": sample_rate, "steps": steps,
                       "max_grad_norm": self.max_grad_norm, "target_epsilon": self.epsilon, "delta": self.delta,
                       "grad_sample_mode": self.mode, "started": time.monotonic()}
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
        recipe.with_(epochs=1, batch_size=4, wrap=probe).fit(x, y, n_classes, seed=0)
    except Exception as e:  # noqa: BLE001 - any failure here is the network's incompatibility with DP-SGD
        raise UserError(f"the recipe's network cannot be trained with DP-SGD ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:200]}); use layers Opacus supports") from None
