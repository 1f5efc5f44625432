"""Perturbed copies of the points a membership attack queries.

Augmentation views (Carlini et al. 2022 section VI.B; Zarifzadeh et al. 2024, whose code queries each
CIFAR image on flips and 1-pixel shifts): a model is surer of its training points, and of their
translated copies, than of others; querying several views and combining the scores lowers the noise of
the signal. Shifts move the image by whole pixels and fill with the background value (the input range's
low end). Label-only membership inference (Choquette-Choo et al. 2021, "Label-Only Membership Inference
Attacks") counts how many views and Gaussian-noise copies of a point the model still labels correctly:
training points sit further from the decision boundary. The noise is drawn once from a fixed seed, so
the audited model and every reference model answer the very same queries (the calibration needs that)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

# shifts in the order they are taken: the point itself, the four 1-pixel moves, then the diagonals
SHIFTS = [(0, 0), (0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (-1, -1), (1, -1), (-1, 1)]
MAX_VIEWS = 2 * len(SHIFTS)


@dataclass(frozen=True)
class View:
    flip: bool
    dy: int
    dx: int

    def describe(self) -> str:
        parts = (["flipped"] if self.flip else []) + ([f"shifted ({self.dy:+d}, {self.dx:+d}) px"]
                                                       if (self.dy, self.dx) != (0, 0) else [])
        return " and ".join(parts) or "as is"


def image_views(n: int, flips: bool) -> list[View]:
    """The first `n` views: the 9 shifts (the point itself first), then, with `flips`, their mirror images."""
    views = [View(False, dy, dx) for dy, dx in SHIFTS]
    if flips:
        views += [View(True, dy, dx) for dy, dx in SHIFTS]
    if not 1 <= n <= len(views):
        raise ValueError(f"augmentations must be between 1 and {len(views)} ({'with' if flips else 'without'} flips)")
    return views[:n]


def apply_view(x: torch.Tensor, v: View, fill: float = 0.0) -> torch.Tensor:
    """x of shape (N, C, H, W) flipped left-right and shifted by (dy, dx) pixels, the gap filled."""
    if v.flip:
        x = x.flip(-1)
    if v.dy == 0 and v.dx == 0:
        return x
    out = torch.full_like(x, fill)
    h, w = x.shape[-2:]
    ys, yd = (slice(0, h - v.dy), slice(v.dy, h)) if v.dy >= 0 else (slice(-v.dy, h), slice(0, h + v.dy))
    xs, xd = (slice(0, w - v.dx), slice(v.dx, w)) if v.dx >= 0 else (slice(-v.dx, w), slice(0, w + v.dx))
    out[..., yd, xd] = x[..., ys, xs]
    return out


@dataclass
class NoisePlan:
    """Gaussian noise at each of `sigmas` (fractions of the input range's width), `draws` copies per point
    and sigma, clipped to the input range; generated from `seed`."""
    sigmas: tuple[float, ...]
    draws: int
    low: float
    high: float
    seed: int

    @property
    def queries(self) -> int:
        return len(self.sigmas) * self.draws

    def copies(self, x: torch.Tensor):
        """Yields the noisy copies of x, one batch per (sigma, draw), the same ones on every call."""
        gen = torch.Generator().manual_seed(self.seed)
        width = self.high - self.low
        for s in self.sigmas:
            for _ in range(self.draws):
                noise = torch.randn(x.shape, generator=gen, dtype=x.dtype) * (s * width)
                yield (x + noise).clamp(self.low, self.high)
