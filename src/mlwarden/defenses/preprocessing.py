"""What the input-preprocessing defences share: the network behind a preprocessing step, in the form the
attack adapted to it needs, and the oblivious attack that a report shows only to strike it through.

Athalye, Carlini, Wagner 2018 ("Obfuscated Gradients Give a False Sense of Security") broke preprocessing
defences by adapting the attack: a differentiable step is attacked end to end, a non-differentiable one
with BPDA (Backward Pass Differentiable Approximation: the forward pass is exact, the backward pass treats
the step as the identity), a random one with EOT (the audit's stochastic-output check switches it on).
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..core.defense import Defense
from ..core.perturb import ascend, random_start
from ..core.target import Target, TorchTarget
from ..core.threat import Params


class Preprocessed(nn.Module):
    """model(prep(x)). With `bpda`, the backward pass goes through prep as if it were the identity
    (x + (prep(x) - x).detach()): predictions are exact, gradients are BPDA's."""

    def __init__(self, prep: Callable | nn.Module, model: nn.Module, bpda: bool):
        super().__init__()
        self.prep, self.model, self.bpda = prep, model, bpda

    def forward(self, x):
        z = self.prep(x)
        if self.bpda:
            z = x + (z - x).detach()
        return self.model(z)


def defended_target(target: Target, prep, bpda: bool, what: str) -> TorchTarget:
    """The target behind the preprocessing step, white-box through the adapted module."""
    module = Preprocessed(prep, target.module, bpda)
    return TorchTarget(module, target.n_classes, target.input_shape, target.access, f"{target.name} + {what}")


def oblivious(base: nn.Module, defended: nn.Module, data, eps: float, n: int, seed: int, steps: int = 40
              ) -> dict[str, Any]:
    """The number the defence's authors would have reported: PGD against the classifier alone, its
    adversarial examples then sent through the defence. Not a result; shown struck through beside the
    adaptive attack's number."""
    s = data.space
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(data.x_test), generator=g)[:n]
    x, y = data.x_test[idx], data.y_test[idx]
    e = eps * s.width
    torch.manual_seed(seed)
    adv = ascend(lambda a: F.cross_entropy(base(a), y, reduction="none"), x, random_start(x, e, "linf", s.low, s.high),
                 e, "linf", s.low, s.high, steps=steps, step_size=2.5 * e / steps)
    with torch.no_grad():
        k = int((defended(adv).argmax(1) == y).sum())
    return {"oblivious_robust_accuracy": k / len(y), "n": len(y), "eps": eps,
            "attack": f"PGD-{steps} on the classifier alone, Linf eps {eps:g}, then through the defence"}


class PreprocessingParams(Params):
    eps: float = Field(0.1, gt=0, description="Linf budget of the oblivious attack (default: the audit's)")
    oblivious_points: int = Field(200, gt=0)


class PreprocessingDefense(Defense):
    """An inference defence that transforms inputs before the model; re-audited by the attack adapted to it,
    with the oblivious attack's number computed only to be shown struck through."""

    kind: ClassVar[str] = "inference"
    network_only: ClassVar[str | None] = "puts its transform in front of a network, attacked through its gradients (BPDA)"
    mitigates: ClassVar[tuple[str, ...]] = ("whitebox-cascade",)

    def evaluate(self, subject, hardened, p: PreprocessingParams, ctx) -> dict:
        return {"oblivious": oblivious(subject.target.module, hardened.target.module, ctx.data, p.eps,
                                       p.oblivious_points, ctx.seed)}
