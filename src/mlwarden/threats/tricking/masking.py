"""Gradient-masking checks (Athalye, Carlini, Wagner 2018, "Obfuscated Gradients Give a False Sense of
Security"; Carlini et al. 2019, "On Evaluating Adversarial Robustness"). A check that fires turns a
robust-accuracy number into "unreliable: adaptive attack required" instead of a result.

The cheap checks here run once per audit and are shared by every white-box threat; the cascade adds
the ones that need attack results (black-box beats white-box, more steps help, the security curve).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...core.finding import Check, Severity, Status
from ...core.target import outputs_are_probabilities
from .common import margin, severity_from_ratio

ZERO_GRAD_FRACTION = 0.10   # more than this share of correctly classified points with an exactly-zero gradient
EOT_SAMPLES = 16
HANDLED = {"stochastic-outputs"}  # fired, but the attacks adapt (EOT), so the number stays a result


def basic_checks(ctx, model, x: torch.Tensor, y: torch.Tensor, loss: str = "margin") -> list[Check]:
    """The cheap checks, with the zero-gradient check on the gradient the attack itself follows: `margin`
    (scale-free, the cascade's DLR stage) or `ce` (FGSM, PGD, APGD-CE: cross-entropy saturates to an exactly
    zero gradient on confident float32 outputs, e.g. for uint8-range inputs)."""
    key = f"masking_basic_{loss}"
    if key in ctx.cache:
        return ctx.cache[key]
    with torch.no_grad():
        a, b = model(x), model(x)
    diff = float((a - b).abs().max())
    checks = [Check("stochastic-outputs", diff > 1e-6,
                    f"two identical calls differ by up to {diff:.3g}; attacks use EOT over {EOT_SAMPLES} draws"
                    if diff > 1e-6 else "identical calls give identical outputs")]
    probs = outputs_are_probabilities(a)
    checks.append(Check("probability-outputs", probs,
                        "the model outputs probabilities, not logits: cross-entropy on them saturates and hides "
                        "gradients; attack the logits (or log-probabilities) instead" if probs
                        else "outputs are logits"))
    xg = x.clone().requires_grad_(True)
    out = model(xg)
    objective = F.cross_entropy(out, y, reduction="sum") if loss == "ce" else margin(out, y).sum()
    g, = torch.autograd.grad(objective, xg)
    correct = a.argmax(1) == y
    zero = (g.flatten(1).abs().amax(1) == 0) & correct
    frac = float(zero.sum()) / max(int(correct.sum()), 1)
    what = "cross-entropy loss" if loss == "ce" else "margin"
    checks.append(Check("zero-gradient", frac > ZERO_GRAD_FRACTION,
                        f"{int(zero.sum())} of {int(correct.sum())} correctly classified points have an exactly "
                        f"zero input gradient of the {what} the attack follows (limit {ZERO_GRAD_FRACTION:.0%}): "
                        "a non-differentiable, shattered or saturated gradient; use BPDA, a margin (DLR) loss or a "
                        "black-box attack"))
    ctx.cache[key] = checks
    return checks


def attack_model(model, checks: list[Check], transform=None):
    """The model the attacks should use: EOT-wrapped when its outputs are random."""
    if any(c.name == "stochastic-outputs" and c.fired for c in checks):
        from .eot import EOT  # eot imports pgd, which imports this module
        return EOT(model, transform or (lambda t: t), EOT_SAMPLES)
    return model


def verdict(clean: float, robust: float, checks: list[Check], what: str) -> tuple[Status, Severity, str]:
    fired = [c.name for c in checks if c.fired and c.name not in HANDLED]
    sev = severity_from_ratio(robust, clean)
    if fired:
        worst = sev if sev.rank >= Severity.HIGH.rank else Severity.HIGH
        return (Status.UNRELIABLE, worst,
                f"unreliable: adaptive attack required ({', '.join(fired)}); {what} left "
                f"{100 * robust:.1f}% accuracy, an upper bound at best")
    return Status.OK, sev, f"{what}: accuracy {100 * clean:.1f}% -> {100 * robust:.1f}%"
