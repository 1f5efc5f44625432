"""Label flipping: an availability and a targeted poisoning attack on the training labels (Biggio, Nelson &
Laskov 2011, "Support vector machines under adversarial label noise"; Xiao et al. 2012; the random and
targeted flips of Paudice et al. 2018, "Label sanitization against label flipping poisoning attacks").

Threat model: the attacker controls the labels of a share of the training set (a crowd-labelling platform,
a poisoned annotation vendor), not the inputs, and the victim is retrained through its recipe. Random: a
budget of points gets a wrong label drawn at random (accuracy falls everywhere). Targeted: points of one
class get another class's label (that class's recall falls). Adaptive: the flips an informed attacker
chooses against an outlier filter (Koh, Steinhardt & Liang 2018): points of the source class that lie
closest to the target class's centroid, so that under their new label they sit inside that class's
sphere and slab. Budget: flipped points as a fraction of the training set (random) or of the source class
(targeted, adaptive), 1-40%. Measured: test accuracy
(and the source class's recall) against budget, each with its interval, and its paired drop from the
clean model's."""
from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Literal

import torch
from pydantic import Field

from ...core import measure, severity
from ...core.finding import Finding, Metric, Remedy, Severity, Status
from ...core.registry import register
from ...core.target import Access
from ...core.threat import Context, Params, Threat
from .poisoning import sanitized_fit

Strategy = Literal["random", "targeted", "adaptive"]
REMEDY = Remedy("knn-label-sanitization", "Relabel each training point to the majority label of its k nearest "
                "neighbours when that majority is clear (Paudice et al. 2018), or drop per-class outliers (sphere "
                "and slab filters); keep the labelling pipeline's provenance and audit a sample of labels by hand.",
                "mlwarden harden --defense knn-label-sanitization")


class FlipParams(Params):
    budgets: list[Annotated[float, Field(gt=0, le=0.5)]] = Field([0.05, 0.1, 0.2, 0.3, 0.4], min_length=1)
    headline_budget: float = Field(0.3, gt=0, le=0.5)
    strategies: list[Strategy] = Field(["random", "targeted"], min_length=1)
    source: int | None = Field(None, ge=0, description="targeted: the class whose points are flipped (unset: the "
                                                       "pair the clean model confuses most)")
    target: int | None = Field(None, ge=0)


def flip(y: torch.Tensor, x: torch.Tensor, strategy: str, budget: float, n_classes: int, source: int, target: int,
         seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(poisoned labels, planted mask). Random: a share `budget` of all training points get a uniformly drawn
    wrong label; targeted and adaptive: a share `budget` of the points of `source` are labelled `target`
    (adaptive picks those nearest to the target class's centroid)."""
    g = torch.Generator().manual_seed(seed)
    n = len(y)
    y_new, planted = y.clone(), torch.zeros(n, dtype=torch.bool)
    if strategy == "random":
        idx = torch.randperm(n, generator=g)[:max(1, round(budget * n))]
        y_new[idx] = (y[idx] + torch.randint(1, n_classes, (len(idx),), generator=g)) % n_classes
    else:
        pool = torch.nonzero(y == source).flatten()
        k = max(1, round(budget * len(pool)))
        if strategy == "adaptive":
            flat = x.reshape(n, -1).float()
            centre = flat[y == target].mean(0)
            idx = pool[torch.argsort((flat[pool] - centre).norm(dim=1))[:k]]
        else:
            idx = pool[torch.randperm(len(pool), generator=g)[:k]]
        y_new[idx] = target
    planted[idx] = True
    return y_new, planted


def most_confused(model, x: torch.Tensor, y: torch.Tensor, n_classes: int) -> tuple[int, int]:
    with torch.no_grad():
        pred = model(x).argmax(1)
    conf = torch.zeros(n_classes, n_classes)
    conf.index_put_((y, pred), torch.ones(len(y)), accumulate=True)
    conf.fill_diagonal_(-1)
    i = int(conf.argmax())
    return i // n_classes, i % n_classes


@register
class LabelFlipping(Threat):
    """Label flipping: wrong training labels, at random or from one class to another, through the recipe."""

    name = "label-flipping"
    family = "model-corruption"
    title = "Training labels flipped by an attacker"
    needs = Access.LABELS
    modalities = ("image", "tabular")
    atlas = ["AML.T0020"]
    Params = FlipParams
    profiles = {"quick": {"budgets": [0.1, 0.3]}, "thorough": {"strategies": ["random", "targeted", "adaptive"],
                                                                 "budgets": [0.01, 0.05, 0.1, 0.2, 0.3, 0.4]}}
    remedy = REMEDY
    needs_recipe = True
    retrains_any_model = True  # a forest or a booster retrained as itself too
    in_default_audit = False   # retrains the model once per budget and strategy


    def run(self, ctx: Context, p: FlipParams) -> Finding:
        data, c = ctx.data, ctx.data.n_classes
        budgets = sorted(set(p.budgets) | {p.headline_budget})
        none = torch.zeros(len(data.y_train), dtype=torch.bool)
        clean, clean_filter = sanitized_fit(ctx.recipe, data.x_train, data.y_train, none, c, ctx.seed)
        ok_clean = measure.correct(clean, data.x_test, data.y_test)
        source, target = (p.source, p.target) if p.source is not None and p.target is not None else \
            most_confused(clean, data.x_test, data.y_test, c)
        if max(source, target) >= c or source == target:
            raise ValueError(f"source {source} and target {target} must be two different classes below {c}")
        in_source = data.y_test == source
        metrics = [Metric.rate("clean: test accuracy", int(ok_clean.sum()), len(ok_clean)), *clean_filter]
        table, curves, worst = [], {}, None
        for strategy in p.strategies:
            curves[strategy] = []
            for b in budgets:
                ctx.check_time()
                y_bad, planted = flip(data.y_train, data.x_train, strategy, b, c, source, target, ctx.seed)
                model, filt = sanitized_fit(ctx.recipe, data.x_train, y_bad, planted, c, ctx.seed, data.y_train)
                ok = measure.correct(model, data.x_test, data.y_test)
                acc = Metric.rate(f"{strategy} {100 * b:g}%: test accuracy", int(ok.sum()), len(ok))
                drop = measure.paired_difference(ok_clean, ok)
                row = {"strategy": strategy, "budget": f"{100 * b:g}%", "flipped": int(planted.sum()),
                       "test accuracy": acc.text(), "change (points, 95% CI)":
                       f"{100 * drop[0]:+.1f} ({100 * drop[1]:+.1f} to {100 * drop[2]:+.1f})"}
                rise = -drop[2]                     # the least drop the interval allows
                if strategy != "random":
                    rec = Metric.rate(f"{strategy} {100 * b:g}%: recall of class {source}", int(ok[in_source].sum()),
                                      int(in_source.sum()))
                    base = ok_clean[in_source]
                    d_src = measure.paired_difference(base, ok[in_source])
                    row[f"recall of class {source}"] = rec.text()
                    row["recall change (points, 95% CI)"] = (f"{100 * d_src[0]:+.1f} ({100 * d_src[1]:+.1f} to "
                                                             f"{100 * d_src[2]:+.1f})")
                    rise = max(rise, -d_src[2])
                    if b == p.headline_budget:
                        metrics.append(rec)
                for m in filt:
                    row[m.name] = m.text()
                table.append(row)
                curves[strategy].append((b, acc))
                if b == p.headline_budget:
                    metrics += [acc, *[replace(m, name=f"{strategy} {100 * b:g}%: {m.name}") for m in filt]]
                    if worst is None or rise > worst[0]:
                        worst = (rise, strategy, acc, drop)
        rise, strategy, acc, drop = worst
        sev = severity.POISONING.grade(rise) if rise > 0 else Severity.LOW
        headline = (f"{100 * p.headline_budget:g}% of training labels flipped ({strategy}"
                    + (f", class {source} -> {target}" if strategy != "random" else "") + f"): test accuracy "
                    f"{100 * ok_clean.float().mean():.1f}% -> {acc.text()}, {100 * drop[0]:+.1f} points "
                    f"(95% CI {100 * drop[1]:+.1f} to {100 * drop[2]:+.1f})")
        evidence = [self._plot(ctx, curves, ok_clean)]
        notes = [f"Each budget retrains the model through its recipe ({ctx.recipe.name}) on {len(data.y_train)} "
                 "training points with the flipped labels; the change is paired on the same test points.",
                 f"Targeted and adaptive flips relabel a share of class {source} (the budget is a share of that class) "
                 f"as {target}: the pair the clean model confuses most, unless the source and target parameters say "
                 "otherwise. Adaptive flips pick the source points nearest the target class's centroid (inside its "
                 "sphere and slab). Random flips: the budget is a share of the whole training set."]
        return self.finding(ctx, p, status=Status.OK, severity=sev, headline=headline, metrics=metrics,
                            evidence=evidence, details={"headline_metric": acc.name, "headline_worse": "lower",
                                                        "table": table, "notes": notes,
                                                        "source": source, "target": target,
                                                        "severity_rule": "lower 95% bound of the accuracy (or "
                                                                         "source-class recall) lost at the "
                                                                         "headline budget"})

    def _plot(self, ctx: Context, curves: dict, ok_clean) -> str:
        from ...plots import rate_curves
        path = ctx.evidence_path("label-flipping.png")
        series = {f"test accuracy ({s})": ([m.value for _, m in rows], [m.ci_low for _, m in rows],
                                           [m.ci_high for _, m in rows]) for s, rows in curves.items()}
        xs = [b for b, _ in next(iter(curves.values()))]
        rate_curves(path, xs, series, xlabel="flipped labels (% of the training set)", ylabel="test accuracy",
                    title=f"label flipping (clean accuracy {100 * ok_clean.float().mean():.1f}%)", percent_x=True)
        return ctx.rel(path)
