"""Feature squeezing (Xu, Evans, Qi 2018, "Feature Squeezing: Detecting Adversarial Examples in Deep Neural
Networks"): reduce the colour bit depth (round each value to one of 2^bits levels of the input range)
and/or apply a median filter, in front of the model. Bit-depth reduction has no useful gradient, so the
audit attacks it with BPDA; the median filter is differentiable almost everywhere and is attacked end to
end."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from ..core.errors import UserError
from ..core.registry import register
from .preprocessing import PreprocessingDefense, PreprocessingParams, defended_target


def squeeze_bits(x: torch.Tensor, bits: int, low: float, high: float) -> torch.Tensor:
    """Each value rounded (half up) to the nearest of 2^bits evenly spaced levels in [low, high]."""
    levels = 2 ** bits - 1
    u = ((x - low) / (high - low)).clamp(0, 1)
    return torch.floor(u * levels + 0.5) / levels * (high - low) + low


def median_filter(x: torch.Tensor, size: int) -> torch.Tensor:
    """A size x size median filter over each channel of (n, c, h, w) images, edges reflected."""
    pad = size // 2
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, size - 1 - pad, pad, size - 1 - pad), mode="reflect")
    windows = F.unfold(padded, size).view(n, c, size * size, h * w)
    return windows.median(2).values.view(n, c, h, w)


class Squeeze(torch.nn.Module):
    def __init__(self, bits: int | None, median: int | None, low: float, high: float):
        super().__init__()
        self.bits, self.median, self.low, self.high = bits, median, low, high

    def forward(self, x):
        if self.median:
            x = median_filter(x, self.median)
        if self.bits:
            x = squeeze_bits(x, self.bits, self.low, self.high)
        return x


class SqueezeParams(PreprocessingParams):
    bits: int = Field(1, ge=0, le=16, description="bit depth (0: no bit-depth reduction)")
    median: int | None = Field(None, ge=2, le=7, description="median filter size (images; None: off)")


@register
class FeatureSqueezing(PreprocessingDefense):
    """Feature squeezing (Xu et al. 2018): bit-depth reduction and median filtering, attacked with BPDA."""

    name = "feature-squeezing"
    title = "Feature squeezing"
    Params = SqueezeParams
    sweepable = ("bits", "median")

    def check(self, p: SqueezeParams, data) -> None:
        if not p.bits and p.median is None:
            raise UserError("feature-squeezing needs bits or median (or both)")
        if p.median and (data.modality != "image" or len(data.input_shape) != 3):
            raise UserError("feature-squeezing median applies to images of shape (channels, height, width)")
        if data.modality == "text":
            raise UserError("feature-squeezing applies to continuous inputs; this data is text")
        if p.bits and data.space.mixed_scales:
            raise UserError("feature-squeezing bits reduce one range to 2^bits levels, and these features have "
                            "ranges of their own: scale them to a common range first")

    def defend_target(self, target, p: SqueezeParams, ctx):
        data = ctx.data
        self.check(p, data)
        prep = Squeeze(p.bits, p.median, data.space.low, data.space.high)
        what = " + ".join(x for x in (f"median {p.median}x{p.median}" if p.median else "",
                                      f"{p.bits}-bit squeezing" if p.bits else "") if x)
        bpda = bool(p.bits)
        return defended_target(target, prep, bpda, what), {
            "bits": p.bits, "median": p.median,
            "adaptive_attack": "BPDA (identity backward pass through the squeezing)" if bpda else "end to end"}
