"""Local model poisoning tailored to the aggregation rule (Fang, Cao, Jia & Gong 2020, "Local model poisoning
attacks to Byzantine-robust federated learning"), full knowledge (the attacker sees the round's honest
updates and knows the rule):

- against Krum (and Multi-Krum, Bulyan): every malicious client sends -lambda * s, where s is the sign of
  the honest mean update; lambda starts at the largest honest update's largest coordinate and halves until
  Krum selects a malicious update (down to 1e-5), so the global model moves against every coordinate;
- against median and trimmed mean ("full trim"): every coordinate j gets a value just beyond the honest
  extreme on the side opposite to the honest direction s_j: in [w_max, b w_max] (or [w_max, w_max / b] when
  w_max <= 0) when s_j < 0, and in [w_min / b, w_min] (or [b w_min, w_min] when w_min < 0) when s_j > 0, b = 2.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field

from ...core.registry import register
from ...federated.aggregate import krum_scores
from ...federated.simulation import Adversary
from .common import FederatedParams, FederatedThreat

KRUM_LIKE = ("krum", "multi-krum", "bulyan")


def fang_krum(updates: torch.Tensor, bad: torch.Tensor, f: int) -> torch.Tensor:
    honest = updates[~bad]
    s = torch.sign(honest.mean(0))
    lam = float(honest.abs().max())
    out = updates.clone()
    while lam > 1e-5:
        out[bad] = -lam * s
        if bool(bad[int(torch.argmin(krum_scores(out, f)))]):
            break
        lam /= 2
    return out


def fang_trim(updates: torch.Tensor, bad: torch.Tensor, generator: torch.Generator, b: float = 2.0) -> torch.Tensor:
    honest = updates[~bad]
    s = torch.sign(honest.mean(0))
    hi, lo = honest.max(0).values, honest.min(0).values
    # s < 0: push up, beyond the largest honest value; s > 0: push down, beyond the smallest
    up_lo, up_hi = hi, torch.where(hi > 0, hi * b, hi / b)
    down_lo, down_hi = torch.where(lo > 0, lo / b, lo * b), lo
    out = updates.clone()
    for i in torch.nonzero(bad).flatten().tolist():
        u = torch.rand(updates.shape[1], generator=generator, dtype=updates.dtype)
        out[i] = torch.where(s < 0, up_lo + u * (up_hi - up_lo), down_lo + u * (down_hi - down_lo))
    return out


@dataclass(frozen=True)
class Tailored(Adversary):
    malicious: frozenset
    against: str

    def craft(self, updates, weights, bad, info, aggregator):
        name, params = aggregator
        rule = name if self.against == "auto" else self.against
        if rule in KRUM_LIKE:   # the server's f, as the rule assumes it (defenses/krum.py, bulyan.py)
            k = len(updates)
            f = params.get("f")
            return fang_krum(updates, bad, f if f is not None else (k - 3) // (4 if name == "bulyan" else 2))
        return fang_trim(updates, bad, torch.Generator().manual_seed(7_777 + info.round))  # the attacker's own dice


class FangParams(FederatedParams):
    against: Literal["auto", "krum", "median"] = Field("auto", description="the rule the attack is shaped for "
                                                       "(auto: the federation's own; median also covers the "
                                                       "trimmed mean and FedAvg)")


@register
class FangTailored(FederatedThreat):
    """Local model poisoning shaped to the aggregation rule: Krum or median/trimmed mean (Fang et al. 2020)."""
    name = "fang-tailored"
    title = "Local model poisoning tailored to the aggregation rule"
    Params = FangParams
    what = "Poisoning tailored to the rule"

    def adversary(self, ctx, params, bad):
        return Tailored(bad, params.against)
