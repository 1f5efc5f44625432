"""What every malicious-client threat shares: the federation the audit describes (the subject's recipe is a
FederatedRecipe), the clean federation of each seed (cached for the audit), and one measurement: the global
model's accuracy per round with and without the attacker, over seeds, for each fraction of malicious clients.

Numbers: the final accuracy under attack is the mean over seeds with a Student-t interval, and its drop from
the clean federation is paired by seed (the same partition, initialisation and sampling on both sides)."""
from __future__ import annotations

import json
import math
import time
from typing import Annotated, ClassVar

import torch
from pydantic import Field

from ...core.finding import Finding, Metric, Remedy, Status
from ...core.severity import FEDERATED
from ...core.stats import mean_interval
from ...core.target import Access
from ...core.threat import Context, Params, Threat
from ...federated.simulation import Adversary, History, describe_rounds, simulate

REMEDY = Remedy("trimmed-mean", "Aggregate with a robust rule instead of the mean: the coordinate-wise trimmed mean or "
                "median, Krum or Bulyan bound what a minority of clients can do to the global model; compare them on "
                "this federation, with and without attackers, with mlwarden harden.",
                "mlwarden harden --defense trimmed-mean")


class FederatedParams(Params):
    fractions: list[Annotated[float, Field(gt=0, lt=1)]] = Field([0.2], min_length=1,
                                                                 description="share of clients that are malicious")
    headline_fraction: float | None = Field(None, gt=0, lt=1, description="the fraction the headline reports "
                                            "(default: the first)")
    seeds: int = Field(3, ge=1, le=50, description="federations run per setting (intervals are over seeds)")


def malicious_ids(clients: int, fraction: float, seed: int) -> frozenset:
    m = max(1, round(fraction * clients))
    return frozenset(torch.randperm(clients, generator=torch.Generator().manual_seed(seed + 31337))[:m].tolist())


def clean_history(ctx: Context, seed: int) -> History:
    key = ("federated-clean", json.dumps(ctx.recipe.describe(), sort_keys=True, default=str), seed)
    if key not in ctx.cache:
        d = ctx.data
        ctx.cache[key] = simulate(ctx.recipe, d.x_train, d.y_train, d.n_classes, seed=seed,
                                  test=(d.x_test, d.y_test), backend=ctx.backend, check=ctx.check_time)
    return ctx.cache[key]


def seed_metric(name: str, values: list[float], low: float = 0.0, high: float = 1.0, unit: str = "rate") -> Metric:
    """Mean over seeds with its Student-t interval, clipped to [low, high] (low -1 for a difference of rates)."""
    mean, lo, hi = mean_interval(values)
    return Metric(name, mean, len(values), max(lo, low) if math.isfinite(lo) else None,
                  min(hi, high) if math.isfinite(hi) else None, unit)


class FederatedThreat(Threat):
    family = "federated"
    needs = Access.WHITE_BOX   # the attacker is a participant: it holds the global model every round
    needs_recipe = True
    in_default_audit = False   # an audit --federated runs the family
    atlas = ["AML.T0020"]
    Params = FederatedParams
    remedy = REMEDY
    what: ClassVar[str] = ""   # the attack, for the headline
    worse: ClassVar[str] = "lower"   # the direction in which the headline number (the first metric) is worse

    def skip_reason(self, ctx: Context) -> str | None:
        reason = super().skip_reason(ctx)   # a participant holds the model: white-box
        if reason is None and not getattr(ctx.recipe, "federated", False):
            return "needs a federation: mlwarden audit --federated (how the model is trained across clients)"
        return reason

    def adversary(self, ctx: Context, params, bad: frozenset) -> Adversary:
        raise NotImplementedError

    def attacked(self, ctx: Context, params, fraction: float, seed: int) -> History:
        d = ctx.data
        adv = self.adversary(ctx, params, malicious_ids(ctx.recipe.clients, fraction, seed))
        return simulate(ctx.recipe, d.x_train, d.y_train, d.n_classes, seed=seed, test=(d.x_test, d.y_test),
                        adversary=adv, backend=ctx.backend, check=ctx.check_time)

    def run(self, ctx: Context, params) -> Finding:
        t0 = time.monotonic()
        fed = ctx.recipe
        seeds = [ctx.seed + i for i in range(params.seeds)]
        clean = [clean_history(ctx, s) for s in seeds]
        rows, runs = [], {}
        for fraction in params.fractions:
            runs[fraction] = [self.attacked(ctx, params, fraction, s) for s in seeds]
            rows.append(self.row(ctx, fraction, clean, runs[fraction], params))
        head = params.headline_fraction if params.headline_fraction in runs else params.fractions[0]
        row = next(r for r in rows if r["fraction"] == head)
        metrics, severity, headline = self.summarize(ctx, row, clean, runs[head], params)
        evidence = [self.plot(ctx, clean, runs[head], head)]
        return self.finding(ctx, params, status=Status.OK, severity=severity, headline=headline, metrics=metrics,
                            evidence=evidence, seconds=time.monotonic() - t0,
                            details={"headline_metric": metrics[0].name, "headline_worse": self.worse,
                                     "federation": fed.summary(), "aggregator": fed.aggregator, "table": rows,
                                     "malicious_clients": {str(f): max(1, round(f * fed.clients)) for f in runs},
                                     "rounds": {"clean": [describe_rounds(h) for h in clean],
                                                "attacked": [describe_rounds(h) for h in runs[head]]}})

    def row(self, ctx, fraction, clean, attacked, params) -> dict:
        acc = seed_metric("accuracy", [h.accuracy[-1] for h in attacked])
        drop = seed_metric("drop", [c.accuracy[-1] - h.accuracy[-1] for c, h in zip(clean, attacked)], -1.0)
        return {"fraction": fraction, "accuracy": _r(acc.value), "accuracy_ci": [_r(acc.ci_low), _r(acc.ci_high)],
                "drop": _r(drop.value), "drop_ci": [_r(drop.ci_low), _r(drop.ci_high)], "seeds": len(attacked)}

    def summarize(self, ctx, row, clean, attacked, params):
        n, fed = len(attacked), ctx.recipe
        acc = seed_metric(f"final accuracy under attack (mean of {n} seeds)", [h.accuracy[-1] for h in attacked])
        base = seed_metric(f"final accuracy without attack (mean of {n} seeds)", [h.accuracy[-1] for h in clean])
        drop = seed_metric("accuracy drop (paired by seed)", [c.accuracy[-1] - h.accuracy[-1]
                                                               for c, h in zip(clean, attacked)], -1.0)
        k = sum(int(h.correct.sum()) for h in attacked)
        pooled = Metric.rate("final accuracy under attack, pooled test predictions", k,
                             sum(len(h.correct) for h in attacked))
        worst = drop.ci_low if drop.ci_low is not None else drop.value
        severity = FEDERATED.grade(worst)
        headline = (f"{self.what} from {row['fraction']:.0%} of clients takes the global model ({fed.aggregator}) "
                    f"from {100 * base.value:.1f}% to {100 * acc.value:.1f}% test accuracy")
        return [acc, base, drop, pooled], severity, headline

    def plot(self, ctx: Context, clean, attacked, fraction) -> str:
        from ...plots import rate_curves
        series = {"no attack": _band([h.accuracy for h in clean]),
                  f"{fraction:.0%} malicious": _band([h.accuracy for h in attacked])}
        if attacked[0].backdoor is not None:
            series["backdoor accuracy"] = _band([h.backdoor for h in attacked])
        path = ctx.evidence_path("rounds.png")
        rate_curves(path, list(range(1, len(clean[0].accuracy) + 1)), series, xlabel="round",
                    ylabel="test accuracy", title=f"{self.name} against {ctx.recipe.aggregator}")
        return ctx.rel(path)


def _r(v):
    return None if v is None else round(float(v), 4)


def _band(curves: list[list[float]]):
    """Per-round mean and min-max over seeds."""
    t = torch.tensor(curves)
    return t.mean(0).tolist(), t.min(0).values.tolist(), t.max(0).values.tolist()
