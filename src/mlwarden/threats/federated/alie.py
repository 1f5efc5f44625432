"""A Little Is Enough (Baruch, Baruch & Goldberg 2019, "A little is enough: circumventing defenses for
distributed learning"): all malicious clients send mu - z * sigma, where mu and sigma are the coordinate-wise
mean and standard deviation of honest updates, and z is the largest shift that keeps the malicious updates
closer to the mean than enough honest ones: s = floor(n / 2 + 1) - m clients must be "farther", so
z = Phi^-1((n - s) / n). The shift hides inside the honest spread, so Krum and median pick it. With few
clients z is near 0 and the attack does little.

Knowledge: `full` (the default, the paper's strongest setting) uses every honest update of the round;
`partial` only the malicious clients' own honest updates."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field

from ...core.registry import register
from ...federated.simulation import Adversary
from .common import FederatedParams, FederatedThreat


def alie_z(n: int, m: int) -> float:
    from scipy.stats import norm
    s = max(math.floor(n / 2 + 1) - m, 1)   # a malicious majority needs no shift; keep z finite
    return float(norm.ppf((n - s) / n))


def alie(updates: torch.Tensor, bad: torch.Tensor, z: float | None, knowledge: str = "full") -> torch.Tensor:
    seen = updates[~bad] if knowledge == "full" and bool((~bad).sum() >= 2) else updates[bad]
    z = alie_z(len(updates), int(bad.sum())) if z is None else z
    out = updates.clone()
    spread = seen.std(0) if len(seen) >= 2 else torch.zeros_like(seen[0])   # one colluder alone sees no spread
    out[bad] = seen.mean(0) - z * spread
    return out


@dataclass(frozen=True)
class LittleIsEnough(Adversary):
    malicious: frozenset
    z: float | None
    knowledge: str

    def craft(self, updates, weights, bad, info, aggregator):
        return alie(updates, bad, self.z, self.knowledge)


class AlieParams(FederatedParams):
    z: float | None = Field(None, description="the shift in standard deviations (default: the paper's z)")
    knowledge: Literal["full", "partial"] = "full"


@register
class ALittleIsEnough(FederatedThreat):
    """A Little Is Enough: colluding clients send the honest mean shifted by z standard deviations (Baruch et al. 2019)."""
    name = "a-little-is-enough"
    title = "A Little Is Enough (colluding clients inside the honest variance)"
    Params = AlieParams
    what = "A Little Is Enough"

    def adversary(self, ctx, params, bad):
        return LittleIsEnough(bad, params.z, params.knowledge)
