"""Neural Cleanse (Wang et al. 2019, "Neural Cleanse: identifying and mitigating backdoor attacks in
neural networks", IEEE S&P): is this model backdoored, and for which class?

Threat model: the user holds a pre-trained image classifier and a little clean data, not the training
set. For every class c, the scan reverse-engineers the smallest trigger that sends clean inputs of the
other classes to c: a mask m (H x W, in [0, 1]) and a pattern p (C x H x W, in the input range), applied
as (1 - m) x + m p, minimising cross-entropy towards c plus lambda |m|_1, by Adam, with lambda raised
while the trigger already succeeds on at least 99% of inputs and lowered while it does not (the paper's
schedule). A backdoor target needs a much smaller trigger than the other classes: the anomaly index of
class c is (median(L1) - L1_c) / (1.4826 MAD(L1)), over the classes' smallest successful mask norms, and
a class whose index exceeds 2 is flagged. The reversed triggers are shown. What the scan cannot see:
triggers that are not a small patch (warping, input-specific, large blended patterns) need no small mask."""
from __future__ import annotations

import torch

from ...core.finding import Finding, Metric, Remedy, Severity, Status
from ...core.registry import register
from ...core.target import Access
from ...core.threat import Context, Threat
from ...scans.cleanse import FLAG, SUCCESS, CleanseParams, scan


REMEDY = Remedy("nc-unlearning", "Remove the backdoor with the clean data you hold: Neural Cleanse unlearning "
                "fine-tunes with the reversed trigger stamped on correctly labelled images (fine-pruning prunes "
                "channels dormant on clean data, then fine-tunes); at inference, refuse triggered inputs with "
                "`mlwarden serve --strip`. Prefer models whose training data and pipeline you can verify.",
                "mlwarden harden --defense nc-unlearning")


@register
class NeuralCleanse(Threat):
    """Neural Cleanse (Wang et al. 2019): reverse-engineer each class's minimal trigger; flag outliers."""

    name = "neural-cleanse"
    family = "model-corruption"
    title = "Backdoor scan: a class that a tiny trigger reaches (Neural Cleanse)"
    needs = Access.WHITE_BOX
    modalities = ("image",)
    atlas = ["AML.T0018"]
    Params = CleanseParams
    profiles = {"quick": {"steps": 150, "clean": 300, "batch": 32}}
    remedy = REMEDY
    needs_torch = True
    in_default_audit = False


    def run(self, ctx: Context, p: CleanseParams) -> Finding:
        model, data = ctx.target.module.eval(), ctx.data
        idx = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(ctx.seed))[:p.clean]
        x, y = data.x_train[idx], data.y_train[idx]
        lo, hi = data.space.low, data.space.high
        found = scan(model, x, y, data.n_classes, lo, hi, p, ctx.seed, check=ctx.check_time)
        masks, patterns, norms_t, rates, index, flagged = (found.masks, found.patterns, found.norms, found.rates,
                                                           found.index, found.flagged)
        norms = norms_t.tolist()
        top = int(torch.argmax(torch.nan_to_num(index, nan=-1.0)))
        rows = [{"class": c, "smallest trigger (mask L1, pixels)": f"{norms[c]:.1f}",
                 "its success on clean inputs": f"{100 * rates[c]:.1f}%", "anomaly index": f"{float(index[c]):.2f}",
                 "flagged": "yes" if c in flagged else "no"} for c in range(data.n_classes)]
        median = float(torch.quantile(norms_t[torch.isfinite(norms_t)], 0.5))
        metrics = [Metric("largest anomaly index", float(index[top])),
                   Metric(f"class {top}: smallest trigger (mask L1)", norms[top]),
                   Metric("median smallest trigger (mask L1)", median)]
        if flagged:
            sev = Severity.HIGH
            headline = (f"Backdoor suspected: class {', '.join(map(str, flagged))} is reached by a trigger of "
                        f"{norms[top]:.1f} pixels against a median of {median:.1f} (anomaly index "
                        f"{float(index[top]):.1f} > {FLAG:g})")
        else:
            sev = Severity.INFO
            headline = (f"No backdoor found by Neural Cleanse: largest anomaly index {float(index[top]):.2f} "
                        f"(class {top}; flag above {FLAG:g}); warping, blended and input-specific triggers evade "
                        "this scan")
        evidence = [self._triggers(ctx, masks, patterns, index, flagged)]
        notes = [f"Each class's trigger was reversed on {len(x)} clean training inputs of the other classes, "
                 f"{p.steps} steps; a trigger counts once it sends {100 * SUCCESS:g}% of them to its class.",
                 "Neural Cleanse looks for a small patch: warping, large blended and input-specific triggers need "
                 "no small mask and are not found; a flagged class on a clean model is a false alarm (classes "
                 "that are naturally easy to reach have small triggers too)."]
        return self.finding(ctx, p, status=Status.OK, severity=sev, headline=headline, metrics=metrics,
                            evidence=evidence,
                            details={"headline_metric": "largest anomaly index", "headline_worse": "higher",
                                     "table": rows, "flagged": flagged, "notes": notes,
                                     "severity_rule": f"high when a class's anomaly index exceeds {FLAG:g}"})

    def _triggers(self, ctx: Context, masks, patterns, index, flagged) -> str:
        from ...plots import image_row
        path = ctx.evidence_path("neural-cleanse-triggers.png")
        lo, hi = ctx.data.space.low, ctx.data.space.high
        images = [m * pat + (1 - m) * lo for m, pat in zip(masks, patterns)]
        labels = [f"{c}{' FLAGGED' if c in flagged else ''}\nidx {float(index[c]):.1f}" for c in range(len(masks))]
        image_row(path, images, labels, lo, hi, title="reversed triggers (mask x pattern) per class")
        return ctx.rel(path)
