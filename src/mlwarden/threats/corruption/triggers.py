"""Backdoor triggers stamped on images (C, H, W) in the data's input range.

- patch: BadNets (Gu, Dolan-Gavitt & Garg 2017, "BadNets: identifying vulnerabilities in the machine
  learning model supply chain"): a small checkerboard square in the bottom-right corner.
- blend: Chen et al. 2017 ("Targeted backdoor attacks on deep learning systems using data poisoning"): a
  fixed random pattern blended over the whole image, x' = (1 - alpha) x + alpha * pattern.
- warp: in the spirit of WaNet (Nguyen & Tran 2021, "WaNet - imperceptible warping-based backdoor
  attack"): a fixed smooth warping field (a k x k grid of random offsets, upsampled bicubically, scaled
  by s) applied with grid_sample; no visible pattern, the image's geometry is the trigger. WaNet's
  "noise mode" (training on randomly warped images with their true labels) is not reproduced.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

KINDS = ("patch", "blend", "warp")


@dataclass(frozen=True)
class Trigger:
    kind: str
    low: float = 0.0
    high: float = 1.0
    size: int = 3           # patch: side in pixels
    alpha: float = 0.15     # blend: opacity of the pattern
    strength: float = 0.5   # warp: s, the largest displacement in pixels is about s
    grid: int = 4           # warp: k, control points per side
    seed: int = 0

    def describe(self) -> str:
        return {"patch": f"BadNets {self.size}x{self.size} checkerboard patch, bottom-right corner",
                "blend": f"blended random pattern (alpha {self.alpha:g})",
                "warp": f"WaNet-style warp (k {self.grid}, s {self.strength:g})"}[self.kind]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"triggers apply to image batches (n, C, H, W), got shape {tuple(x.shape)}")
        g = torch.Generator().manual_seed(self.seed)
        if self.kind == "patch":
            out = x.clone()
            k = min(self.size, x.shape[2], x.shape[3])
            ii, jj = torch.meshgrid(torch.arange(k), torch.arange(k), indexing="ij")
            board = torch.where((ii + jj) % 2 == 0, self.high, self.low).to(x.dtype)
            out[:, :, -k:, -k:] = board
            return out
        if self.kind == "blend":
            pattern = self.low + (self.high - self.low) * torch.rand(x.shape[1:], generator=g).to(x.dtype)
            return (1 - self.alpha) * x + self.alpha * pattern
        if self.kind == "warp":
            return F.grid_sample(x, self._field(x.shape[2], x.shape[3], g).to(x.dtype).expand(len(x), -1, -1, -1),
                                 align_corners=True, padding_mode="border").clamp(self.low, self.high)
        raise ValueError(f"unknown trigger kind {self.kind!r}; known: {', '.join(KINDS)}")

    def _field(self, h: int, w: int, g: torch.Generator) -> torch.Tensor:
        ins = torch.rand(1, 2, self.grid, self.grid, generator=g) * 2 - 1
        ins = ins / ins.abs().mean()
        noise = F.interpolate(ins, size=(h, w), mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        identity = torch.stack([xs, ys], dim=-1)[None]
        scale = torch.tensor([self.strength / w, self.strength / h])  # s pixels, in grid units of 2/size
        return (identity + scale * 2 * noise).clamp(-1, 1)
