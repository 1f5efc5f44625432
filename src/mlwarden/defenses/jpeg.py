"""JPEG-style compression as a defence (Dziugaite, Ghahramani, Roy 2016; Das et al. 2017; Guo et al. 2018):
each 8x8 block of each channel is taken to the 2-D DCT, divided by the JPEG luminance quantization table
scaled to a quality, rounded, and transformed back. Rounding has no useful gradient, so the audit
attacks it with BPDA (Athalye et al. 2018 broke JPEG defences this way)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field

from ..core.errors import UserError
from ..core.registry import register
from .preprocessing import PreprocessingDefense, PreprocessingParams, defended_target

# ITU-T T.81 Annex K, table K.1: luminance quantization for quality 50
LUMINANCE = torch.tensor([
    [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55], [14, 13, 16, 24, 40, 57, 69, 56],
    [14, 17, 22, 29, 51, 87, 80, 62], [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99]], dtype=torch.float32)


def dct_matrix(n: int = 8) -> torch.Tensor:
    """The orthonormal DCT-II matrix."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    m = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2 / n)
    m[0] /= math.sqrt(2)
    return m.float()


def quant_table(quality: int) -> torch.Tensor:
    """The libjpeg scaling of the quality-50 table."""
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    return torch.clamp(torch.floor((LUMINANCE * scale + 50) / 100), min=1)


class JpegQuantize(torch.nn.Module):
    def __init__(self, quality: int, low: float, high: float):
        super().__init__()
        self.low, self.high = low, high
        self.register_buffer("d", dct_matrix())
        self.register_buffer("q", quant_table(quality))

    def forward(self, x):
        n, c, h, w = x.shape
        ph, pw = (-h) % 8, (-w) % 8
        u = (x - self.low) / (self.high - self.low) * 255 - 128   # JPEG's level shift on 0-255 values
        u = F.pad(u, (0, pw, 0, ph), mode="replicate")
        H, W = u.shape[2:]
        blocks = u.view(n, c, H // 8, 8, W // 8, 8).permute(0, 1, 2, 4, 3, 5)
        coef = self.d @ blocks @ self.d.T
        coef = torch.round(coef / self.q) * self.q
        back = (self.d.T @ coef @ self.d).permute(0, 1, 2, 4, 3, 5).reshape(n, c, H, W)[:, :, :h, :w]
        return ((back + 128) / 255).clamp(0, 1) * (self.high - self.low) + self.low


class JpegParams(PreprocessingParams):
    quality: int = Field(75, ge=1, le=100, description="JPEG quality (lower: coarser quantization)")


@register
class JpegCompression(PreprocessingDefense):
    """JPEG-style DCT quantization in front of the model (Das et al. 2017), attacked with BPDA."""

    name = "jpeg"
    title = "JPEG-style DCT quantization"
    Params = JpegParams
    sweepable = ("quality",)

    def check(self, p: JpegParams, data) -> None:
        if data.modality != "image" or len(data.input_shape) != 3:
            raise UserError("jpeg applies to images of shape (channels, height, width)")

    def defend_target(self, target, p: JpegParams, ctx):
        data = ctx.data
        self.check(p, data)
        prep = JpegQuantize(p.quality, data.space.low, data.space.high)
        return defended_target(target, prep, True, f"JPEG quality {p.quality}"), {
            "quality": p.quality, "adaptive_attack": "BPDA (identity backward pass through the quantization)"}
