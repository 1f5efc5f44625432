"""Model replacement (Bagdasaryan, Veit, Hua, Estrin & Shmatikov 2020, "How to backdoor federated
learning"): in one round, malicious clients train the global model on their data with a share of it
stamped with a trigger and relabelled to the attacker's class, for more local epochs, then boost their
update by gamma = K / m (K clients aggregated, m malicious), so the mean becomes, approximately, their
backdoored model. "Constrain and scale" (`mode` constrain) instead scales the boosted update down to the
norm the server is expected to accept (the median honest norm of the round, which a robust server's
clipping also uses), trading strength for stealth. The triggers are the backdoor threat's (BadNets patch,
blend, warp: threats/corruption/triggers.py).

Measured: backdoor accuracy (triggered test inputs of other classes sent to the attacker's class) right
after the malicious round and in every later round (how many rounds it survives at half its strength or
more), and the main task's final accuracy against the clean federation."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import torch
from pydantic import Field

from ...core.finding import Metric
from ...core.registry import register
from ...core.severity import BACKDOOR
from ...core.stats import clopper_pearson
from ...federated.simulation import Adversary
from ..corruption.triggers import KINDS, Trigger
from .common import FederatedParams, FederatedThreat, _r, seed_metric


def backdoor_data(x: torch.Tensor, y: torch.Tensor, trigger: Trigger, target: int, share: float,
                  seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The client's data with `share` of it added again stamped and relabelled to `target`."""
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(x), generator=g)[:max(1, round(share * len(x)))]
    return torch.cat([x, trigger(x[pick])]), torch.cat([y, torch.full((len(pick),), target, dtype=y.dtype)])


def boost(updates: torch.Tensor, bad: torch.Tensor, mode: str) -> torch.Tensor:
    out = updates.clone()
    gamma = len(updates) / int(bad.sum())
    out[bad] = updates[bad] * gamma
    if mode == "constrain" and bool((~bad).any()):
        bound = float(updates[~bad].norm(dim=1).median())
        norms = out[bad].norm(dim=1, keepdim=True).clamp_min(1e-12)
        out[bad] = out[bad] * torch.clamp(bound / norms, max=1.0)
    return out


@dataclass(frozen=True)
class Replacement(Adversary):
    malicious: frozenset
    active: frozenset
    trigger: Trigger
    target_label: int
    share: float
    epochs: int
    mode: str

    def poison(self, cid, x, y, recipe, seed):
        xb, yb = backdoor_data(x, y, self.trigger, self.target_label, self.share, seed)
        return xb, yb, recipe.with_(epochs=self.epochs)

    def craft(self, updates, weights, bad, info, aggregator):
        return boost(updates, bad, self.mode)


class ReplacementParams(FederatedParams):
    fractions: list[Annotated[float, Field(gt=0, lt=1)]] = Field([0.1], min_length=1,
                                                                 description="share of clients that are malicious")
    at_round: int | None = Field(None, ge=0, description="the malicious round, from 0 (default: the middle one)")
    trigger: Literal[KINDS] = "patch"
    target: int = Field(0, ge=0, description="the attacker's class")
    share: float = Field(0.5, gt=0, le=4, description="triggered copies added, as a share of the client's data")
    epochs: int = Field(5, ge=1, le=100, description="the malicious clients' local epochs")
    mode: Literal["replace", "constrain"] = "replace"
    patch_size: int = Field(3, ge=1, le=64)


@register
class ModelReplacement(FederatedThreat):
    """Model replacement: a boosted backdoored update replaces the global model in one round (Bagdasaryan et al. 2020)."""
    name = "model-replacement"
    title = "Model replacement with a backdoor"
    modalities = ("image",)
    Params = ReplacementParams
    what = "Model replacement"
    worse = "higher"

    def at(self, ctx, params) -> int:
        rounds = ctx.recipe.rounds
        return min(params.at_round, rounds - 1) if params.at_round is not None else (rounds - 1) // 2

    def adversary(self, ctx, params, bad):
        low, high = ctx.data.space.low, ctx.data.space.high
        trigger = Trigger(params.trigger, float(low), float(high), size=params.patch_size, seed=ctx.seed)
        return Replacement(bad, frozenset({self.at(ctx, params)}), trigger, params.target, params.share,
                           params.epochs, params.mode)

    def row(self, ctx, fraction, clean, attacked, params) -> dict:
        row = super().row(ctx, fraction, clean, attacked, params)
        at = self.at(ctx, params)
        after = seed_metric("backdoor", [h.backdoor[at] for h in attacked])
        row.update(backdoor_after=_r(after.value), backdoor_after_ci=[_r(after.ci_low), _r(after.ci_high)],
                   survives=[survival(h.backdoor, at) for h in attacked])
        return row

    def summarize(self, ctx, row, clean, attacked, params):
        metrics, _, _ = super().summarize(ctx, row, clean, attacked, params)
        at, n, fed = self.at(ctx, params), len(attacked), ctx.recipe
        after = seed_metric(f"backdoor accuracy right after the malicious round (mean of {n} seeds)",
                            [h.backdoor[at] for h in attacked])
        k = sum(round(h.backdoor[at] * h.backdoor_n) for h in attacked)
        total = sum(h.backdoor_n for h in attacked)
        pooled = Metric.rate("backdoor accuracy right after the malicious round, pooled", k, total)
        final = seed_metric(f"backdoor accuracy after the last round (mean of {n} seeds)",
                            [h.backdoor[-1] for h in attacked])
        lasting = [survival(h.backdoor, at) for h in attacked]
        survives = Metric(f"rounds the backdoor keeps half its strength, 0 if not planted (of {len(attacked[0].backdoor) - at - 1} "
                          "after it; mean of seeds)", sum(lasting) / n, n, unit="rounds")
        severity = BACKDOOR.grade(clopper_pearson(k, total)[0])
        headline = (f"Model replacement by {row['fraction']:.0%} of clients in round {at + 1}: "
                    f"{100 * after.value:.1f}% of triggered inputs go to class {params.target} against "
                    f"{fed.aggregator}; main-task accuracy {100 * metrics[0].value:.1f}% "
                    f"(clean {100 * metrics[1].value:.1f}%)")
        return [after, pooled, final, survives, *metrics], severity, headline


def survival(backdoor: list[float], at: int) -> int:
    """Rounds after the malicious one in which backdoor accuracy stays at or above half its value right after;
    0 when the backdoor was not planted (below 50% right after its round)."""
    if backdoor[at] < 0.5:
        return 0
    n = 0
    for b in backdoor[at + 1:]:
        if b < backdoor[at] / 2:
            break
        n += 1
    return n
