"""DP-FedAvg (McMahan, Ramage, Talwar & Zhang 2018, "Learning differentially private recurrent language
models"): the server clips every client update to L2 norm `clip`, averages with the fixed denominator
qN (the expected number of sampled clients), and adds Gaussian noise of standard deviation
noise_multiplier * clip / (qN). That is client-level DP: epsilon (at `delta`) covers everything one client
contributes over all rounds, accounted with Opacus's RDP accountant at sampling rate q over the rounds. The
accountant assumes Poisson sampling; the simulation samples round(qN) clients without replacement, so with
sample < 1 the epsilon is an approximation (exact at sample = 1, where every client takes part every round)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import Field

from ..core.registry import register
from ..core.threat import Params
from ..federated.aggregate import AggregationDefense, RoundInfo
from .norm_clipping import clip_norms


@dataclass(frozen=True)
class DPFedAvg:
    clip: float
    noise_multiplier: float

    def __call__(self, updates, weights, info: RoundInfo):
        total = clip_norms(updates, self.clip).sum(0)
        noise = torch.randn(total.shape, generator=info.generator, dtype=total.dtype)
        return (total + self.noise_multiplier * self.clip * noise) / info.expected


class DPFedAvgParams(Params):
    clip: float = Field(1.0, gt=0, description="L2 bound on each client's update")
    noise_multiplier: float = Field(1.0, ge=0, description="noise standard deviation / clip")
    delta: float = Field(1e-3, gt=0, lt=1, description="delta of the client-level (epsilon, delta) guarantee")


@register
class DPFedAvgDefense(AggregationDefense):
    """DP-FedAvg: clipped client updates plus Gaussian noise at the server, client-level epsilon (McMahan et al. 2018)."""
    name = "dp-fedavg"
    title = "DP-FedAvg (client-level differential privacy)"
    Params = DPFedAvgParams
    mitigates = ("federated",)

    def rule(self, params):
        return DPFedAvg(params.clip, params.noise_multiplier)

    def defend_recipe(self, recipe, params, data):
        recipe, facts = super().defend_recipe(recipe, params, data)
        facts.update(client_epsilon(params.noise_multiplier, params.delta, recipe.sample, recipe.rounds))
        return recipe, facts


def client_epsilon(noise: float, delta: float, sample: float, rounds: int) -> dict:
    """Client-level epsilon after `rounds` rounds at sampling rate `sample` (inf without noise)."""
    if noise == 0:
        return {"epsilon": float("inf"), "delta": delta, "accountant": "none (no noise)"}
    from ..privacy.accountant import epsilon_for
    return {"epsilon": round(epsilon_for(noise, delta, sample, rounds, "rdp"), 3), "delta": delta,
            "accountant": "rdp", "noise_multiplier": noise}
