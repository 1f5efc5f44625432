"""Noise on client updates (Zhu, Liu & Han 2019, section 5): each client adds Gaussian noise of standard
deviation `sigma` times its update's root-mean-square before sending it (relative, so FedSGD gradients and
FedAvg deltas get the same protection). Not differential privacy (no clipping, no accounting: use dp-fedavg
or dp-sgd for a guarantee); its accuracy cost is measured by retraining the federation (harden)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import Field

from ..core.defense import Defense
from ..core.registry import register
from ..core.threat import Params
from .gradient_pruning import LEAKAGE, with_transform


@dataclass(frozen=True)
class Noise:
    sigma: float

    def __call__(self, vec: torch.Tensor, generator: torch.Generator):
        rms = vec.pow(2).mean().sqrt()
        return vec + self.sigma * rms * torch.randn(vec.shape, generator=generator, dtype=vec.dtype)


class NoiseParams(Params):
    sigma: float = Field(0.1, ge=0, description="noise standard deviation, as a multiple of the update's RMS")


@register
class UpdateNoiseDefense(Defense):
    """Update noise: clients add Gaussian noise relative to their update's size (Zhu et al. 2019); not DP."""
    name = "update-noise"
    title = "Gaussian noise on client updates"
    kind = "training"
    mitigates = LEAKAGE
    modalities = ("image", "tabular")
    Params = NoiseParams
    sweepable = ("sigma",)

    def defend_recipe(self, recipe, params, data):
        return with_transform(recipe, Noise(params.sigma), self.name), {"sigma": params.sigma}
