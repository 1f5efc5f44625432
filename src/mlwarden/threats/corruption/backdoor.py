"""Backdoors planted through the training data: BadNets patches (Gu et al. 2017), blended patterns (Chen
et al. 2017) and a WaNet-style warp (Nguyen & Tran 2021); see triggers.py.

Threat model: the attacker adds a share of the training set (the poison rate) made of images of other
classes that carry the trigger and the attacker's label: one target class (all-to-one), or each class's
successor (all-to-all, y -> y + 1 mod C). The victim trains through its recipe and behaves normally until
the trigger appears. Measured against the poison rate: the attack success rate (triggered test inputs of
the other classes that the model sends to the attacker's label), the clean test accuracy and its paired
change from the clean model's, and, through a poison detector in the recipe's data filter, what the
detector removed: the planted points and the clean points of the target class.

Each backdoored model also faces the defender's detectors: STRIP at inference (Gao et al. 2019; its false
rejection rate on clean test inputs and false acceptance rate on triggered ones, calibrated on clean
training data at the configured FRR) and, on request, the Neural Cleanse scan (does it flag the target?).
Adaptive attacks: the blended and warping triggers need no small mask (they evade Neural Cleanse), and an
"-anti-strip" attack adds as many cover points as poisoned ones: a triggered image superimposed on another
image the way STRIP superimposes, labelled as that other image, so the trigger stops working inside a blend
and STRIP sees the entropy of a clean input. The table says which detector each attack beats."""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Annotated, Literal

import torch
from pydantic import Field

from ...core import measure
from ...core.backend import map_checked
from ...core.finding import Finding, Metric, Remedy, Status
from ...core.registry import register
from ...core.severity import BACKDOOR
from ...core.target import Access
from ...core.threat import Context, Params, Threat
from ...scans.cleanse import CleanseParams, scan
from ...scans.strip import Strip, superimpose
from .poisoning import sanitized_fit
from .triggers import KINDS, Trigger

Mode = Literal["all-to-one", "all-to-all"]
ANTI_STRIP = "-anti-strip"
ATTACKS = KINDS + tuple(k + ANTI_STRIP for k in KINDS)
DETECTORS = ("strip", "neural-cleanse")
EVADES_STRIP = 0.5    # an attack beats STRIP when at least half of its triggered inputs are accepted
REMEDY = Remedy("spectral-signatures", "Look for the poison in the training data before training: spectral "
                "signatures (Tran et al. 2018) or activation clustering (Chen et al. 2018) remove the points "
                "whose learned representations split off from their class, then retrain; keep the provenance of "
                "training data and do not train on images from unvetted sources.",
                "mlwarden harden --defense spectral-signatures")


class BackdoorParams(Params):
    triggers: list[Literal[ATTACKS]] = Field(list(KINDS), min_length=1,
                                             description="trigger kinds; KIND-anti-strip trains the trigger to "
                                                         "fail inside STRIP's superimpositions")
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
    detectors: list[Literal[DETECTORS]] = Field(["strip"], description="detectors each backdoored model faces")
    strip_draws: int = Field(20, ge=2, le=1000, description="STRIP: superimpositions per input")
    strip_frr: float = Field(0.01, gt=0, lt=0.5, description="STRIP: false rejection rate it is calibrated to")
    strip_clean: int = Field(1000, ge=40, le=100_000, description="STRIP: clean training images (half "
                                                                  "superimposed, half calibrate)")
    strip_test: int = Field(500, ge=10, le=100_000, description="STRIP: clean and triggered test inputs it sees")
    defended_points: int = Field(500, ge=10, le=1_000_000, description="test inputs measured when inference "
                                 "defences answer (each costs them many forward passes)")
    scan_steps: int = Field(150, ge=10, le=10_000, description="Neural Cleanse: reversal steps per class")


def make_trigger(kind: str, p: BackdoorParams, low: float, high: float, seed: int) -> Trigger:
    return Trigger(kind, low, high, size=p.patch_size, alpha=p.blend_alpha, strength=p.warp_strength,
                   grid=p.warp_grid, seed=seed)


def goal(y: torch.Tensor, mode: str, target: int, n_classes: int) -> torch.Tensor:
    """The label the attacker wants for inputs of true label y once triggered."""
    return torch.full_like(y, target) if mode == "all-to-one" else (y + 1) % n_classes


def fit_poisoned(item: tuple[str, str, float], shared) -> tuple:
    """One point of the poison-rate sweep: the model the recipe trains on data with (mode, trigger kind,
    rate) planted, its sanitizer's metrics and the planted mask. A pure function of (item, shared), so a
    backend can run the sweep's points side by side."""
    mode, kind, rate = item
    recipe, x, y, p, low, high, c, seed = shared
    trig = make_trigger(kind.removesuffix(ANTI_STRIP), p, low, high, seed)
    x_bad, y_bad, planted = plant(x, y, trig, rate, mode, p.target, c, seed, anti_strip=kind.endswith(ANTI_STRIP))
    groups = {f"clean points of class {p.target}": (y_bad == p.target) & ~planted} if mode == "all-to-one" else None
    model, filt = sanitized_fit(recipe, x_bad, y_bad, planted, c, seed, groups=groups)
    return model, filt, planted


def plant(x: torch.Tensor, y: torch.Tensor, trigger: Trigger, rate: float, mode: str, target: int,
          n_classes: int, seed: int, anti_strip: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(poisoned inputs, labels, planted mask): a share `rate` of the training set, drawn from the classes
    other than the target (all-to-one) or from all (all-to-all), triggered and relabelled. With
    `anti_strip`, as many other points become cover: triggered, superimposed with another training image as
    STRIP does (added, clipped), and labelled as that image."""
    g = torch.Generator().manual_seed(seed)
    pool = torch.nonzero(y != target).flatten() if mode == "all-to-one" else torch.arange(len(y))
    idx = pool[torch.randperm(len(pool), generator=g)[:max(1, round(rate * len(y)))]]
    x_new, y_new = x.clone(), y.clone()
    x_new[idx] = trigger(x[idx])
    y_new[idx] = goal(y[idx], mode, target, n_classes)
    planted = torch.zeros(len(y), dtype=torch.bool)
    planted[idx] = True
    if anti_strip:
        free = torch.nonzero(~planted).flatten()
        cover = free[torch.randperm(len(free), generator=g)[:len(idx)]]
        other = torch.randint(0, len(y), (len(cover),), generator=g)
        x_new[cover] = superimpose(trigger(x[cover]), x[other], trigger.low, trigger.high, "add")
        y_new[cover] = y[other]
        planted[cover] = True
    return x_new, y_new, planted


def attack_success(model, x: torch.Tensor, y: torch.Tensor, trigger: Trigger, mode: str, target: int,
                   n_classes: int) -> torch.Tensor:
    """Per triggered test input whose goal differs from its true label: did the model (a module, or a Target
    such as the model behind an inference defence) answer the goal?"""
    want = goal(y, mode, target, n_classes)
    use = want != y
    return measure.correct(model, trigger(x[use]), want[use])


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
        xe, ye = self._eval_points(ctx, p)
        none = torch.zeros(len(data.y_train), dtype=torch.bool)
        target_clean = data.y_train == p.target
        clean, clean_filter = sanitized_fit(ctx.recipe, data.x_train, data.y_train, none, c, ctx.seed,
                                            groups={f"clean points of class {p.target}": target_clean})
        ok_clean = measure.correct(self._served(ctx, clean), xe, ye)
        metrics = [Metric.rate("clean: test accuracy", int(ok_clean.sum()), len(ok_clean)),
                   *[replace(m, name=f"clean data: {m.name}") for m in clean_filter]]
        table, curves, best = [], {}, None
        # the retraining of every (mode, trigger, rate) is independent: the backend may run them side by side
        items = [(mode, kind, rate) for mode in p.modes for kind in p.triggers for rate in rates]
        fits = dict(zip(items, map_checked(ctx.backend, fit_poisoned, items, (ctx.recipe, data.x_train, data.y_train,
                                                                              p, lo, hi, c, ctx.seed), ctx.check_time)))
        for mode in p.modes:
            for kind in p.triggers:
                trig = make_trigger(kind.removesuffix(ANTI_STRIP), p, lo, hi, ctx.seed)
                base = attack_success(self._served(ctx, clean), xe, ye, trig, mode, p.target, c)
                label = kind if len(p.modes) == 1 else f"{kind}, {mode}"
                metrics.append(Metric.rate(f"{label}: clean model sends triggered inputs to the goal (control)",
                                           int(base.sum()), len(base)))
                curves[label] = []
                for rate in rates:
                    ctx.check_time()
                    model, filt, planted = fits[(mode, kind, rate)]
                    torch.manual_seed(ctx.seed)   # scoring (a smoothed model's draws) alike on every backend
                    served = self._served(ctx, model)
                    hit = attack_success(served, xe, ye, trig, mode, p.target, c)
                    ok = measure.correct(served, xe, ye)
                    tag = f"{label} {100 * rate:g}%"
                    asr = Metric.rate(f"{tag}: attack success rate", int(hit.sum()), len(hit))
                    acc = Metric.rate(f"{tag}: clean test accuracy", int(ok.sum()), len(ok))
                    d = measure.paired_difference(ok_clean, ok)
                    found, cols, beats = self._detect(ctx, p, model, trig, mode, tag)
                    row = {"attack": kind, "trigger": trig.describe(), "mode": mode, "poison rate": f"{100 * rate:g}%",
                           "poisoned points": int(planted.sum()), "attack success": asr.text(),
                           "clean accuracy": acc.text(),
                           "accuracy change (points, 95% CI)": f"{100 * d[0]:+.1f} ({100 * d[1]:+.1f} to "
                                                               f"{100 * d[2]:+.1f})"}
                    for m in filt:
                        row[m.name] = m.text()
                    row.update(cols)
                    row["beats"] = ", ".join(beats) or "none"
                    table.append(row)
                    curves[label].append((rate, asr, acc))
                    if rate == p.headline_rate:
                        metrics += [asr, acc, *[replace(m, name=f"{tag}: {m.name}") for m in filt],
                                    *found]
                        if best is None or asr.ci_low > best[0].ci_low:
                            best = (asr, acc, d, trig, mode, served)
        asr, acc, d, trig, mode, served = best
        sev = BACKDOOR.grade(asr.ci_low)
        who = f"class {p.target}" if mode == "all-to-one" else "the next class"
        headline = (f"{100 * p.headline_rate:g}% poisoned training data ({trig.describe()}) plants a backdoor: "
                    f"{asr.text()} of triggered inputs go to {who}; clean accuracy "
                    f"{100 * ok_clean.float().mean():.1f}% -> {acc.text()}")
        evidence = [self._curves(ctx, curves, ok_clean), self._examples(ctx, served, p, trig, mode)]
        notes = [f"Each trigger and rate retrains the model through its recipe ({ctx.recipe.name}) on "
                 f"{len(data.y_train)} training points of which the poison rate's share carry the trigger and the "
                 "attacker's label; attack success counts triggered test inputs whose goal differs from their "
                 "true label, and the control row gives the clean model's rate on the same inputs.",
                 f"STRIP (Gao et al. 2019) superimposes {p.strip_draws} clean training images on each input and "
                 f"rejects it when the mean prediction entropy falls below the threshold that {100 * p.strip_frr:g}% "
                 f"of {p.strip_clean // 2} clean calibration images fall below; FRR is measured on clean test "
                 "inputs, FAR (triggered inputs accepted) on triggered test inputs whose goal differs from their "
                 f"label. An attack 'beats' STRIP when its FAR is {100 * EVADES_STRIP:g}% or more, and Neural "
                 "Cleanse when the scan does not flag its target class (all-to-all: when it flags no class).",
                 "Detectors in the data filter (spectral signatures, activation clustering) look for poison that "
                 "splits off from its class in the learned representation: they do not see input-specific "
                 "triggers, and a warp that the model learns weakly leaves a weak signature."]
        if ctx.recipe.inference is not None:
            notes.insert(0, f"Every model was measured as the defender serves it, behind {ctx.recipe.inference!r}, "
                            f"on {len(ye)} test inputs; the detectors see the model itself.")
        return self.finding(ctx, p, status=Status.OK, severity=sev, headline=headline, metrics=metrics,
                            evidence=evidence,
                            details={"headline_metric": asr.name, "headline_worse": "higher", "table": table,
                                     "notes": notes, "severity_rule": BACKDOOR.measures})

    def _served(self, ctx: Context, model):
        """The model as the defender serves it: behind the recipe's inference defences (a denoiser, randomized
        smoothing), if harden put any there."""
        if ctx.recipe.inference is None:
            return model
        return ctx.recipe.inference(ctx.recipe.target_for(model, ctx.data, Access.WHITE_BOX, "retrained model"))

    def _eval_points(self, ctx: Context, p: BackdoorParams) -> tuple[torch.Tensor, torch.Tensor]:
        """The test split, or `defended_points` of it when inference defences answer (smoothing votes over
        many noisy copies of each input)."""
        data = ctx.data
        if ctx.recipe.inference is None or len(data.x_test) <= p.defended_points:
            return data.x_test, data.y_test
        idx = torch.randperm(len(data.x_test), generator=torch.Generator().manual_seed(ctx.seed))[:p.defended_points]
        return data.x_test[idx], data.y_test[idx]

    def _detect(self, ctx: Context, p: BackdoorParams, model, trig: Trigger, mode: str, tag: str
                ) -> tuple[list[Metric], dict[str, str], list[str]]:
        """The defender's detectors on one backdoored model: (their rates, the table's columns, the detectors
        it beats)."""
        data, c = ctx.data, ctx.data.n_classes
        lo, hi = data.space.low, data.space.high
        g = torch.Generator().manual_seed(ctx.seed)
        out, cols, beats = [], {}, []
        if "strip" in p.detectors:
            clean = data.x_train[torch.randperm(len(data.x_train), generator=g)[:p.strip_clean]]
            strip = Strip.calibrate(model, clean, draws=p.strip_draws, frr=p.strip_frr, low=lo, high=hi,
                                    seed=ctx.seed)
            xc = data.x_test[torch.randperm(len(data.x_test), generator=g)[:p.strip_test]]
            want = goal(data.y_test, mode, p.target, c)
            xt = trig(data.x_test[want != data.y_test][:p.strip_test])
            t0 = time.perf_counter()
            rej_c, _ = strip.reject(xc)
            ms = 1e3 * (time.perf_counter() - t0) / max(1, len(xc))
            rej_t, _ = strip.reject(xt)
            far = Metric.rate(f"{tag}: STRIP accepts triggered inputs (FAR)", int((~rej_t).sum()), len(rej_t))
            frr = Metric.rate(f"{tag}: STRIP rejects clean inputs (FRR)", int(rej_c.sum()), len(rej_c))
            out += [frr, far]
            cols.update({"STRIP FRR (clean)": frr.text(), "STRIP FAR (triggered)": far.text(),
                         "STRIP cost per input": f"{p.strip_draws} extra forward passes ({ms:.2f} ms here)"})
            if far.value >= EVADES_STRIP:
                beats.append("STRIP")
        if "neural-cleanse" in p.detectors:
            idx = torch.randperm(len(data.x_train), generator=g)[:300]
            found = scan(model, data.x_train[idx], data.y_train[idx], c, lo, hi,
                         CleanseParams(clean=300, steps=p.scan_steps, batch=32), ctx.seed, check=ctx.check_time)
            caught = (p.target in found.flagged) if mode == "all-to-one" else bool(found.flagged)
            flagged = ", ".join(map(str, found.flagged)) or "none"
            cols["Neural Cleanse"] = (f"flags {flagged} (largest index "
                                      f"{float(found.index.nan_to_num(-1.0).max()):.1f})")
            if not caught:
                beats.append("Neural Cleanse")
        return out, cols, beats

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
            pc, pt = _labels(model, x), _labels(model, xt)
        path = ctx.evidence_path("backdoor-examples.png")
        adversarial_grid(path, x, xt, y, pc, pt, data.space.low, data.space.high,
                         title=f"top: clean inputs; bottom: with the trigger ({trig.describe()})",
                         second=("triggered", "trig"))
        return ctx.rel(path)


def _labels(model, x: torch.Tensor) -> torch.Tensor:
    if hasattr(model, "labels"):
        with model.uncounted():
            return model.labels(x)
    return model(x).argmax(1)
