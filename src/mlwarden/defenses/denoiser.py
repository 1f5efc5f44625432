"""A denoising autoencoder in front of the model, in the manner of MagNet's reformer (Meng & Chen 2017,
"MagNet: a Two-Pronged Defense against Adversarial Examples"): trained through the one training loop
to map noisy training inputs back to clean ones, it projects inputs towards the data manifold. It is
differentiable, so the audit attacks autoencoder and classifier end to end (Carlini & Wagner 2017,
"MagNet and 'Efficient Defenses...' are not robust", did so)."""
from __future__ import annotations

import math
import time

import torch
from pydantic import Field
from torch import nn

from ..core.errors import UserError
from ..core.recipe import Recipe
from ..core.registry import register
from .preprocessing import PreprocessingDefense, PreprocessingParams, defended_target
from .randomized_smoothing import GaussianNoise


class ConvAutoencoder(nn.Module):
    """Two 3x3 conv layers each way, no pooling: sized for small images; outputs lie in the input range."""

    def __init__(self, input_shape, low: float, high: float, width: int = 16):
        super().__init__()
        c = input_shape[0]
        self.low, self.high = low, high
        self.net = nn.Sequential(nn.Conv2d(c, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1),
                                 nn.ReLU(), nn.Conv2d(width, c, 3, padding=1))

    def forward(self, x):
        return torch.sigmoid(self.net(x)) * (self.high - self.low) + self.low


class DenseAutoencoder(nn.Module):
    """For tabular rows: d -> d/2 -> d with a sigmoid output scaled to the input range."""

    def __init__(self, input_shape, low: float, high: float):
        super().__init__()
        d = math.prod(input_shape)
        self.shape, self.low, self.high = tuple(input_shape), low, high
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(d, max(2, d // 2)), nn.ReLU(), nn.Linear(max(2, d // 2), d))

    def forward(self, x):
        return (torch.sigmoid(self.net(x)) * (self.high - self.low) + self.low).view(-1, *self.shape)


class _Factory:
    def __init__(self, low: float, high: float, image: bool):
        self.low, self.high, self.image = low, high, image

    def __call__(self, input_shape, n_classes):
        cls = ConvAutoencoder if self.image else DenseAutoencoder
        return cls(input_shape, self.low, self.high)

    def __repr__(self):
        return f"autoencoder({'conv' if self.image else 'dense'}, [{self.low:g}, {self.high:g}])"


def train_autoencoder(x: torch.Tensor, low: float, high: float, image: bool, noise: float, epochs: int,
                      seed: int) -> nn.Module:
    """A denoising autoencoder trained through Recipe.fit: noisy inputs in, the clean ones as targets."""
    recipe = Recipe("denoiser", _Factory(low, high, image), epochs=epochs, batch_size=64, lr=1e-3,
                    batch_transform=GaussianNoise(noise * (high - low)), loss=nn.MSELoss())
    return recipe.fit(x, x, 0, seed=seed)


class DenoiserParams(PreprocessingParams):
    noise: float = Field(0.1, gt=0, description="training noise, a fraction of the input range")
    epochs: int = Field(30, gt=0)


@register
class Denoiser(PreprocessingDefense):
    """A denoising autoencoder before the model (MagNet-style, Meng & Chen 2017), attacked end to end."""

    name = "denoiser"
    title = "Denoising autoencoder (MagNet-style reformer)"
    Params = DenoiserParams
    sweepable = ("noise",)

    def check(self, p: DenoiserParams, data) -> None:
        if data.modality == "text":
            raise UserError("denoiser applies to continuous inputs; this data is text")

    def defend_target(self, target, p: DenoiserParams, ctx):
        data, s = ctx.data, ctx.data.space
        image = data.modality == "image" and len(data.input_shape) == 3
        t0 = time.monotonic()
        ae = train_autoencoder(data.x_train, s.low, s.high, image, p.noise, p.epochs, ctx.seed)
        seconds = time.monotonic() - t0
        for q in ae.parameters():
            q.requires_grad_(False)
        with torch.no_grad():
            mse = float(((ae(data.x_test) - data.x_test) ** 2).mean())
        return defended_target(target, ae, False, "denoising autoencoder"), {
            "noise": p.noise, "epochs": p.epochs, "autoencoder_training_s": seconds, "test_reconstruction_mse": mse,
            "adaptive_attack": "end to end through the autoencoder"}
