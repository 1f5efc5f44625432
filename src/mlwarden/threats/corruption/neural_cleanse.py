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
from pydantic import Field

from ...core.finding import Finding, Metric, Severity, Status
from ...core.registry import register
from ...core.target import Access
from ...core.threat import Context, Params, Threat
from .backdoor import REMEDY

SUCCESS = 0.99   # a reversed trigger counts once it sends this share of clean inputs to its class
FLAG = 2.0       # anomaly index above which a class is flagged (Wang et al. 2019)


class CleanseParams(Params):
    clean: int = Field(500, ge=20, le=100_000, description="clean inputs the scan uses (from the training split)")
    steps: int = Field(300, ge=10, le=10_000, description="optimisation steps per class")
    batch: int = Field(64, ge=8, le=4096)
    lr: float = Field(0.1, gt=0)
    init_cost: float = Field(1e-3, gt=0, description="initial weight lambda of the mask's L1 norm")


def reverse_trigger(model, x: torch.Tensor, label: int, low: float, high: float, p: CleanseParams,
                    seed: int) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """(mask (1, H, W), pattern (C, H, W), the smallest L1 norm of a mask that reached SUCCESS on the
    inputs (inf if none did), the success it had) for one class."""
    g = torch.Generator().manual_seed(seed)
    c, h, w = x.shape[1:]
    mask_p = torch.zeros(1, h, w).requires_grad_(True)              # mask = sigmoid-like via tanh
    pat_p = (torch.rand(c, h, w, generator=g) * 0.2 - 0.1).requires_grad_(True)
    opt = torch.optim.Adam([mask_p, pat_p], lr=p.lr, betas=(0.5, 0.9))
    cost, up, down = p.init_cost, 0, 0
    best = (None, None, float("inf"), 0.0)
    want = torch.full((min(p.batch, len(x)),), label)
    for step in range(p.steps):
        idx = torch.randint(0, len(x), (min(p.batch, len(x)),), generator=g)
        mask = (torch.tanh(mask_p) + 1) / 2
        pattern = low + (high - low) * (torch.tanh(pat_p) + 1) / 2
        xs = (1 - mask) * x[idx] + mask * pattern
        out = model(xs)
        ce = torch.nn.functional.cross_entropy(out, want)
        l1 = mask.sum()
        mask_p.grad, pat_p.grad = torch.autograd.grad(ce + cost * l1, [mask_p, pat_p])  # not the model's
        opt.step()
        success = float((out.argmax(1) == label).float().mean())
        if success >= SUCCESS and float(l1.detach()) < best[2]:
            best = (mask.detach().clone(), pattern.detach().clone(), float(l1.detach()), success)
        # the paper's schedule: raise the cost while the trigger works, lower it while it does not
        if success >= SUCCESS:
            up, down = up + 1, 0
        else:
            up, down = 0, down + 1
        if up >= 5:
            cost, up = cost * 1.5, 0
        elif down >= 5:
            cost, down = cost / 1.5 ** 1.5, 0
    if best[0] is None:
        mask = ((torch.tanh(mask_p) + 1) / 2).detach()
        pattern = (low + (high - low) * (torch.tanh(pat_p) + 1) / 2).detach()
        return mask, pattern, float("inf"), success
    return best


def anomaly_index(norms: torch.Tensor) -> torch.Tensor:
    """(median - norm) / (1.4826 MAD) per class: large for a class whose trigger is unusually small."""
    finite = norms[torch.isfinite(norms)]
    med = torch.quantile(finite, 0.5)                 # the mean of the two middle values (torch.median: the lower)
    mad = 1.4826 * torch.quantile((finite - med).abs(), 0.5)
    return (med - norms) / mad.clamp_min(1e-12)


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
        masks, patterns, norms, rates = [], [], [], []
        for c in range(data.n_classes):
            ctx.check_time()
            m, pat, l1, ok = reverse_trigger(model, x[y != c], c, lo, hi, p, ctx.seed + c)
            masks.append(m)
            patterns.append(pat)
            norms.append(l1)
            rates.append(ok)
        norms_t = torch.tensor(norms)
        index = anomaly_index(norms_t)
        flagged = [c for c in range(data.n_classes) if float(index[c]) > FLAG]
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
