"""Backdoors planted through the training data: BadNets patches (Gu et al. 2017), blended patterns (Chen
et al. 2017) and a WaNet-style warp (Nguyen & Tran 2021); see triggers.py.

Threat model: the attacker adds a share of the training set (the poison rate) made of images of other
classes that carry the trigger and the attacker's label: one target class (all-to-one), or each class's
successor (all-to-all, y -> y + 1 mod C). The victim trains through its recipe and behaves normally until
the trigger appears. Measured against the poison rate: the attack success rate (triggered test inputs of
the other classes that the model sends to the attacker's label), the clean test accuracy and its paired
change from the clean model's, and, through a poison detector in the recipe's data filter, what the
detector removed: the planted points and the clean points of the target class."""
from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Literal

import torch
from pydantic import Field

from ...core import measure
from ...core.finding import Finding, Metric, Remedy, Status
from ...core.registry import register
from ...core.severity import BACKDOOR
from ...core.target import Access
from ...core.threat import Context, Params, Threat
from .poisoning import sanitized_fit
from .triggers import KINDS, Trigger

Mode = Literal["all-to-one", "all-to-all"]
REMEDY = Remedy("spectral-signatures", "Look for the poison in the training data before training: spectral "
                "signatures (Tran et al. 2018) or activation clustering (Chen et al. 2018) remove the points "
                "whose learned representations split off from their class, then retrain; keep the provenance of "
                "training data and do not train on images from unvetted sources.",
                "mlwarden harden --defense spectral-signatures")


class BackdoorParams(Params):
    triggers: list[Literal[KINDS]] = Field(list(KINDS), min_length=1)
    rates: list[Annotated[float, Field(gt=0, le=0.5)]] = Field([0.01, 0.05, 0.1], min_length=1,
                                                                 description="poisoned share of the training set")
    headline_rate: float = Field(0.05, gt=0, le=0.5)
    modes: list[Mode] = Field(["all-to-one"], min_length=1)
    target: int = Field(0, ge=0, description="all-to-one: the attacker's class")
    patch_size: int = Field(3, ge=1, le=64)
    blend_alpha: float = Field(0.15, gt=0, lt=1)
    warp_strength: float = Field(1.0, gt=0, le=8, description="mean displacement of the warp, in pixels")
    warp_grid: int = Field(4, ge=2, le=32)
    examples: int = Field(6, ge=1, le=20)


def make_trigger(kind: str, p: BackdoorParams, low: float, high: float, seed: int) -> Trigger:
    return Trigger(kind, low, high, size=p.patch_size, alpha=p.blend_alpha, strength=p.warp_strength,
                   grid=p.warp_grid, seed=seed)


def goal(y: torch.Tensor, mode: str, target: int, n_classes: int) -> torch.Tensor:
    """The label the attacker wants for inputs of true label y once triggered."""
    return torch.full_like(y, target) if mode == "all-to-one" else (y + 1) % n_classes


def plant(x: torch.Tensor, y: torch.Tensor, trigger: Trigger, rate: float, mode: str, target: int,
          n_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(poisoned inputs, labels, planted mask): a share `rate` of the training set, drawn from the classes
    other than the target (all-to-one) or from all (all-to-all), triggered and relabelled."""
    g = torch.Generator().manual_seed(seed)
    pool = torch.nonzero(y != target).flatten() if mode == "all-to-one" else torch.arange(len(y))
    idx = pool[torch.randperm(len(pool), generator=g)[:max(1, round(rate * len(y)))]]
    x_new, y_new = x.clone(), y.clone()
    x_new[idx] = trigger(x[idx])
    y_new[idx] = goal(y[idx], mode, target, n_classes)
    planted = torch.zeros(len(y), dtype=torch.bool)
    planted[idx] = True
    return x_new, y_new, planted


def attack_success(model, x: torch.Tensor, y: torch.Tensor, trigger: Trigger, mode: str, target: int,
                   n_classes: int) -> torch.Tensor:
    """Per triggered test input whose goal differs from its true label: did the model answer the goal?"""
    want = goal(y, mode, target, n_classes)
    use = want != y
    with torch.no_grad():
        return model(trigger(x[use])).argmax(1) == want[use]


@register
class Backdoor(Threat):
    """BadNets, blended and warping backdoors planted through the training data (training access)."""

    name = "backdoor"
    family = "model-corruption"
    title = "Backdoor planted through poisoned training data"
    needs = Access.LABELS
    modalities = ("image",)
    atlas = ["AML.T0020", "AML.T0018"]
    Params = BackdoorParams
    profiles = {"quick": {"triggers": ["patch"], "rates": [0.05]},
                "thorough": {"modes": ["all-to-one", "all-to-all"], "rates": [0.005, 0.01, 0.02, 0.05, 0.1]}}
    remedy = REMEDY
    needs_recipe = True
    in_default_audit = False   # retrains the model once per trigger, rate and mode


    def run(self, ctx: Context, p: BackdoorParams) -> Finding:
        data, c = ctx.data, ctx.data.n_classes
        if p.target >= c:
            raise ValueError(f"target class {p.target} must be below the number of classes ({c})")
        lo, hi = data.space.low, data.space.high
        rates = sorted(set(p.rates) | {p.headline_rate})
        none = torch.zeros(len(data.y_train), dtype=torch.bool)
        target_clean = data.y_train == p.target
        clean, clean_filter = sanitized_fit(ctx.recipe, data.x_train, data.y_train, none, c, ctx.seed,
                                            groups={f"clean points of class {p.target}": target_clean})
        ok_clean = measure.correct(clean, data.x_test, data.y_test)
        metrics = [Metric.rate("clean: test accuracy", int(ok_clean.sum()), len(ok_clean)),
                   *[replace(m, name=f"clean data: {m.name}") for m in clean_filter]]
        table, curves, best = [], {}, None
        for mode in p.modes:
            for kind in p.triggers:
                trig = make_trigger(kind, p, lo, hi, ctx.seed)
                base = attack_success(clean, data.x_test, data.y_test, trig, mode, p.target, c)
                label = kind if len(p.modes) == 1 else f"{kind}, {mode}"
                metrics.append(Metric.rate(f"{label}: clean model sends triggered inputs to the goal (control)",
                                           int(base.sum()), len(base)))
                curves[label] = []
                for rate in rates:
                    ctx.check_time()
                    x_bad, y_bad, planted = plant(data.x_train, data.y_train, trig, rate, mode, p.target, c,
                                                  ctx.seed)
                    groups = {f"clean points of class {p.target}": (y_bad == p.target) & ~planted} \
                        if mode == "all-to-one" else None
                    model, filt = sanitized_fit(ctx.recipe, x_bad, y_bad, planted, c, ctx.seed, groups=groups)
                    hit = attack_success(model, data.x_test, data.y_test, trig, mode, p.target, c)
                    ok = measure.correct(model, data.x_test, data.y_test)
                    tag = f"{label} {100 * rate:g}%"
                    asr = Metric.rate(f"{tag}: attack success rate", int(hit.sum()), len(hit))
                    acc = Metric.rate(f"{tag}: clean test accuracy", int(ok.sum()), len(ok))
                    d = measure.paired_difference(ok_clean, ok)
                    row = {"trigger": trig.describe(), "mode": mode, "poison rate": f"{100 * rate:g}%",
                           "poisoned points": int(planted.sum()), "attack success": asr.text(),
                           "clean accuracy": acc.text(),
                           "accuracy change (points, 95% CI)": f"{100 * d[0]:+.1f} ({100 * d[1]:+.1f} to "
                                                               f"{100 * d[2]:+.1f})"}
                    for m in filt:
                        row[m.name] = m.text()
                    table.append(row)
                    curves[label].append((rate, asr, acc))
                    if rate == p.headline_rate:
                        metrics += [asr, acc, *[replace(m, name=f"{tag}: {m.name}") for m in filt]]
                        if best is None or asr.ci_low > best[0].ci_low:
                            best = (asr, acc, d, trig, mode, model)
        asr, acc, d, trig, mode, model = best
        sev = BACKDOOR.grade(asr.ci_low)
        who = f"class {p.target}" if mode == "all-to-one" else "the next class"
        headline = (f"{100 * p.headline_rate:g}% poisoned training data ({trig.describe()}) plants a backdoor: "
                    f"{asr.text()} of triggered inputs go to {who}; clean accuracy "
                    f"{100 * ok_clean.float().mean():.1f}% -> {acc.text()}")
        evidence = [self._curves(ctx, curves, ok_clean), self._examples(ctx, model, p, trig, mode)]
        notes = [f"Each trigger and rate retrains the model through its recipe ({ctx.recipe.name}) on "
                 f"{len(data.y_train)} training points of which the poison rate's share carry the trigger and the "
                 "attacker's label; attack success counts triggered test inputs whose goal differs from their "
                 "true label, and the control row gives the clean model's rate on the same inputs.",
                 "Detectors in the data filter (spectral signatures, activation clustering) look for poison that "
                 "splits off from its class in the learned representation: they do not see input-specific "
                 "triggers, and a warp that the model learns weakly leaves a weak signature."]
        return self.finding(ctx, p, status=Status.OK, severity=sev, headline=headline, metrics=metrics,
                            evidence=evidence,
                            details={"headline_metric": asr.name, "headline_worse": "higher", "table": table,
                                     "notes": notes, "severity_rule": BACKDOOR.measures})

    def _curves(self, ctx: Context, curves: dict, ok_clean) -> str:
        from ...plots import rate_curves
        path = ctx.evidence_path("backdoor-success.png")
        series = {f"attack success ({k})": ([a.value for _, a, _ in rows], [a.ci_low for _, a, _ in rows],
                                            [a.ci_high for _, a, _ in rows]) for k, rows in curves.items()}
        first = next(iter(curves.values()))
        series["clean accuracy (" + next(iter(curves)) + ")"] = ([m.value for _, _, m in first],
                                                                 [m.ci_low for _, _, m in first],
                                                                 [m.ci_high for _, _, m in first])
        rate_curves(path, [r for r, _, _ in first], series, xlabel="poisoned training data (%)", ylabel="rate",
                    title=f"backdoor: attack success (clean accuracy {100 * ok_clean.float().mean():.1f}%)",
                    percent_x=True)
        return ctx.rel(path)

    def _examples(self, ctx: Context, model, p: BackdoorParams, trig: Trigger, mode: str) -> str:
        from ...plots import adversarial_grid
        data = ctx.data
        want = goal(data.y_test, mode, p.target, data.n_classes)
        idx = torch.nonzero(want != data.y_test).flatten()[:p.examples]
        x, y = data.x_test[idx], data.y_test[idx]
        xt = trig(x)
        with torch.no_grad():
            pc, pt = model(x).argmax(1), model(xt).argmax(1)
        path = ctx.evidence_path("backdoor-examples.png")
        adversarial_grid(path, x, xt, y, pc, pt, data.space.low, data.space.high,
                         title=f"top: clean inputs; bottom: with the trigger ({trig.describe()})",
                         second=("triggered", "trig"))
        return ctx.rel(path)
