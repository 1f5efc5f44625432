"""A backdoored pre-trained model passed on through transfer learning (Gu et al. 2017, BadNets, section 5:
the US-to-Swedish traffic-sign transfer kept a backdoor that cost 25% accuracy on triggered inputs).

Threat model: the attacker publishes a pre-trained model with a backdoor (BadNets poison in its
pre-training data); the victim fine-tunes it on a new task, either training only a new head on its frozen
features or fine-tuning every layer. Here the classes split in two: the model is pre-trained on the first
half (the attacker's task, with the poison) and fine-tuned on the second half (the victim's task). The
trigger's effect on the new model is its paired accuracy loss on triggered inputs of the new task, set
against the same fine-tuning of a clean pre-trained model (the control: what the trigger pattern costs by
itself)."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ...core import measure
from ...core.finding import Finding, Metric, Severity, Status
from ...core.layers import new_head
from ...core.registry import register
from ...core.severity import POISONING
from ...core.target import Access
from ...core.threat import Context, Params, Threat
from .backdoor import REMEDY, attack_success, plant
from .triggers import KINDS, Trigger

METHODS = {"frozen": "new head on frozen features", "full": "full fine-tuning"}


class TransferParams(Params):
    trigger: Literal[KINDS] = "patch"
    rate: float = Field(0.1, gt=0, le=0.5, description="poisoned share of the pre-training data")
    methods: list[Literal["frozen", "full"]] = Field(["frozen", "full"], min_length=1)
    fine_tune_epochs: int | None = Field(None, ge=1, le=500, description="unset: the recipe's epochs")
    full_lr_scale: float = Field(0.1, gt=0, le=1, description="full fine-tuning's learning rate, as a share of "
                                                              "the recipe's")
    patch_size: int = Field(3, ge=1, le=64)


def trigger_effect(model, x: torch.Tensor, y: torch.Tensor, trig: Trigger):
    """(accuracy on clean inputs, on triggered ones, paired change (estimate, low, high), share of
    predictions the trigger changes)."""
    ok = measure.correct(model, x, y)
    xt = trig(x)
    ok_t = measure.correct(model, xt, y)
    with torch.no_grad():
        moved = model(x).argmax(1) != model(xt).argmax(1)
    return ok, ok_t, measure.paired_difference(ok, ok_t), moved


@register
class BackdoorTransfer(Threat):
    """A backdoored pre-trained model, fine-tuned on a new task: does the trigger still move it?"""

    name = "backdoor-transfer"
    family = "model-corruption"
    title = "Backdoor passed on through transfer learning"
    needs = Access.LABELS
    modalities = ("image",)
    atlas = ["AML.T0018", "AML.T0010"]
    Params = TransferParams
    remedy = REMEDY
    needs_recipe = True
    in_default_audit = False   # pre-trains two models and fine-tunes each per method

    def skip_reason(self, ctx: Context) -> str | None:
        if ctx.data.n_classes < 4:
            return "needs at least 4 classes, split into a pre-training task and a fine-tuning task"
        return super().skip_reason(ctx)

    def run(self, ctx: Context, p: TransferParams) -> Finding:
        data, c = ctx.data, ctx.data.n_classes
        half = c // 2
        trig = Trigger(p.trigger, data.space.low, data.space.high, size=p.patch_size, seed=ctx.seed)
        pre_tr, pre_te = data.y_train < half, data.y_test < half
        new_tr, new_te = ~pre_tr, ~pre_te
        x_pre, y_pre = data.x_train[pre_tr], data.y_train[pre_tr]
        x_bad, y_bad, planted = plant(x_pre, y_pre, trig, p.rate, "all-to-one", 0, half, ctx.seed)
        recipe = ctx.recipe.with_(data_filter=None)
        pretrained = {"backdoored": recipe.fit(x_bad, y_bad, half, seed=ctx.seed),
                      "clean": recipe.fit(x_pre, y_pre, half, seed=ctx.seed)}
        asr_pre = attack_success(pretrained["backdoored"], data.x_test[pre_te], data.y_test[pre_te], trig,
                                 "all-to-one", 0, half)
        metrics = [Metric.rate("pre-trained backdoored model: attack success on its own task", int(asr_pre.sum()),
                               len(asr_pre))]
        xn, yn = data.x_train[new_tr], data.y_train[new_tr] - half
        xt, yt = data.x_test[new_te], data.y_test[new_te] - half
        epochs = p.fine_tune_epochs or recipe.epochs
        rows, worst = [], None
        for method in p.methods:
            tuned = recipe.with_(epochs=epochs, lr=recipe.lr * (p.full_lr_scale if method == "full" else 1.0))
            effects = {}
            for origin, model in pretrained.items():
                ctx.check_time()
                start = new_head(model, c - half, freeze=method == "frozen", seed=ctx.seed)
                fine = tuned.fit(xn, yn, c - half, seed=ctx.seed, init=start)
                ok, ok_t, d, moved = trigger_effect(fine, xt, yt, trig)
                effects[origin] = d
                tag = f"{method}, {origin} pre-trained"
                acc = Metric.rate(f"{tag}: new-task accuracy", int(ok.sum()), len(ok))
                acc_t = Metric.rate(f"{tag}: new-task accuracy on triggered inputs", int(ok_t.sum()), len(ok_t))
                mv = Metric.rate(f"{tag}: predictions the trigger changes", int(moved.sum()), len(moved))
                metrics += [acc, acc_t, mv]
                rows.append({"fine-tuning": METHODS[method], "pre-trained model": origin, "accuracy": acc.text(),
                             "on triggered inputs": acc_t.text(),
                             "trigger's effect (points, 95% CI)": f"{100 * d[0]:+.1f} ({100 * d[1]:+.1f} to "
                                                                  f"{100 * d[2]:+.1f})",
                             "predictions changed": mv.text()})
            excess = -effects["backdoored"][2] + effects["clean"][0]   # least loss the interval allows, beyond the control's
            if worst is None or excess > worst[0]:
                worst = (excess, method, effects)
        excess, method, effects = worst
        sev = POISONING.grade(excess) if excess > 0 else Severity.LOW
        b, k = effects["backdoored"], effects["clean"]
        headline = (f"After {METHODS[method]} on a new task, the trigger of a backdoored pre-trained model changes "
                    f"new-task accuracy by {100 * b[0]:+.1f} points (95% CI {100 * b[1]:+.1f} to {100 * b[2]:+.1f}), "
                    f"against {100 * k[0]:+.1f} for a clean pre-trained model")
        notes = [f"Pre-training: classes 0-{half - 1} ({int(pre_tr.sum())} points, {int(planted.sum())} of them "
                 f"poisoned with {trig.describe()}, target class 0); fine-tuning: classes {half}-{c - 1} "
                 f"({len(yn)} points, {epochs} epochs; full fine-tuning at {p.full_lr_scale:g} x the recipe's "
                 "learning rate). The trigger's effect is the paired change in new-task accuracy when the trigger "
                 "is stamped on the same test inputs."]
        return self.finding(ctx, p, status=Status.OK, severity=sev, headline=headline, metrics=metrics,
                            details={"table": rows, "notes": notes,
                                     "headline_metric": f"{method}, backdoored pre-trained: new-task accuracy on "
                                                        "triggered inputs",
                                     "severity_rule": "lower 95% bound of the backdoored model's accuracy loss on "
                                                      "triggered inputs, less the clean control's loss, graded "
                                                      "on the poisoning ladder"})
