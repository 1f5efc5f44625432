"""Focused attack on a spam filter (Nelson et al. 2008, "Exploiting Machine Learning to Subvert Your Spam
Filter", LEET '08, section 3.2).

Threat model: the attacker wants one legitimate message (a competitor's bid, say) kept out of its
recipient's inbox. It knows a fraction p of the words the message will contain and sends attack mail made
of them, which the victim's users label spam and the filter is retrained on (training access through the
recipe). Budget: the attack messages as a fraction of the clean training mail. Measured: the share of
target messages that leave the inbox (marked spam or unsure) against p, over targets the clean filter puts
in the inbox."""
from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field

from ...core import severity
from ...core.finding import Finding, Metric, Status
from ...core.registry import register
from ...core.target import Access
from ...core.threat import Context, Params, Threat
from ...text.messages import MODALITY, decode
from ...text.spambayes import HAM, words
from .spam_common import ATLAS, FAMILY, REMEDY, attack_messages, copies_for, fit_poisoned, skip_reason

SUCCESS = "targets moved out of the inbox"


class FocusedParams(Params):
    known_fractions: list[Annotated[float, Field(gt=0, le=1)]] = Field(
        [0.1, 0.3, 0.5, 0.9], min_length=1, description="shares p of the target's words the attacker knows")
    headline_fraction: float = Field(0.5, gt=0, le=1)
    targets: int = Field(40, ge=1, le=1000, description="target messages (test ham the clean filter lets in)")
    control: float = Field(0.01, gt=0, le=0.5, description="attack messages per target, as a fraction of the "
                                                           "clean training mail")


def focused_attack(recipe, data, targets: list[str], fractions: list[float], control: float, seed: int = 0,
                   check_time=lambda: None) -> dict[float, dict]:
    """For each known fraction p: whether each target left the inbox after the victim was retrained with
    attack messages made of p of its words (a fresh random subset per target), and what a sanitizer kept."""
    rng = np.random.default_rng(seed)
    copies = copies_for(control, len(data.x_train))
    out = {}
    for p in fractions:
        moved, kept, examples = [], [], []
        for text in targets:
            check_time()
            ws = words(text)
            known = sorted(rng.choice(ws, max(1, round(p * len(ws))), replace=False).tolist())
            flt, removal = fit_poisoned(recipe, data, *attack_messages(known, copies), seed)
            moved.append(bool(flt.verdicts([text])[0] != HAM))
            if removal:
                kept.append(removal[0].value == 0)   # none of this target's attack messages removed
            if len(examples) < 3:
                examples.append({"target": text[:200], "attack message": " ".join(known)[:200], "left inbox": moved[-1]})
        out[p] = {"moved": moved, "kept": kept, "examples": examples}
    return out


def inbox_targets(flt, data, n: int, seed: int) -> list[str]:
    """Up to n test ham messages that the clean filter puts in the inbox and that have two words or more."""
    texts = [t for t, y in zip(decode(data.x_test), data.y_test.tolist()) if y == 0]
    v = flt.verdicts(texts)
    pool = [t for t, vi in zip(texts, v) if vi == HAM and len(words(t)) >= 2]
    rng = np.random.default_rng(seed)
    return [pool[i] for i in sorted(rng.choice(len(pool), min(n, len(pool)), replace=False))]


@register
class SpamFocused(Threat):
    """Focused attack: mail made of a target message's words keeps that one message out of the inbox."""

    name = "spam-focused"
    family = FAMILY
    title = "Spam filter poisoned to block a chosen message (focused attack)"
    needs = Access.LABELS
    modalities = (MODALITY,)
    atlas = ATLAS
    Params = FocusedParams
    remedy = REMEDY

    def skip_reason(self, ctx: Context) -> str | None:
        return skip_reason(ctx) or super().skip_reason(ctx)

    def run(self, ctx: Context, params: FocusedParams) -> Finding:
        fractions = sorted(set(params.known_fractions) | {params.headline_fraction})
        clean = ctx.recipe.fit(ctx.data.x_train, ctx.data.y_train, seed=ctx.seed)
        targets = inbox_targets(clean, ctx.data, params.targets, ctx.seed)
        if not targets:
            return self.finding(ctx, params, status=Status.SKIPPED, severity=severity.Severity.INFO,
                                headline="skipped: no test ham reaches the inbox of the clean filter, so there is "
                                         "no message to keep out")
        res = focused_attack(ctx.recipe, ctx.data, targets, fractions, params.control, ctx.seed, ctx.check_time)
        copies = copies_for(params.control, len(ctx.data.x_train))
        table, metrics = [], []
        for p, r in res.items():
            m = Metric.rate(f"p={p:g}: {SUCCESS}", sum(r["moved"]), len(r["moved"]))
            metrics.append(m)
            row = {"known share p": f"{p:g}", SUCCESS: m.text()}
            if r["kept"]:
                kept = Metric.rate(f"p={p:g}: targets whose attack mail the sanitizer let through all of",
                                   sum(r["kept"]), len(r["kept"]))
                metrics.append(kept)
                row["attack mail kept by the sanitizer"] = kept.text()
            table.append(row)
        head = next(m for m in metrics if m.name == f"p={params.headline_fraction:g}: {SUCCESS}")
        sev = severity.POISONING.grade(head.ci_low)
        headline = (f"Knowing {100 * params.headline_fraction:g}% of a message's words, {copies} attack messages "
                    f"({100 * params.control:g}% of the training mail) keep it out of the inbox: {head.text()} of "
                    "targets")
        evidence = [self._plot(ctx, res)]
        notes = [f"Targets: {len(targets)} test ham messages the clean filter puts in the inbox; for each, the victim "
                 f"is retrained with {copies} attack messages made of a random share p of its words.",
                 "Examples (headline p): " + " | ".join(f"target '{e['target'][:80]}' <- attack '{e['attack message'][:60]}'"
                                                         f" ({'left the inbox' if e['left inbox'] else 'stayed'})"
                                                         for e in res[params.headline_fraction]["examples"])]
        return self.finding(ctx, params, status=Status.OK, severity=sev, headline=headline, metrics=metrics,
                            evidence=evidence, details={"headline_metric": head.name, "table": table, "notes": notes,
                                                        "severity_rule": "lower 95% bound of the share of targets "
                                                                         "moved out of the inbox at the headline p"})

    def _plot(self, ctx: Context, res: dict) -> str:
        from ...plots import rate_curves
        ms = [Metric.rate("", sum(r["moved"]), len(r["moved"])) for r in res.values()]
        path = ctx.evidence_path("focused-attack.png")
        rate_curves(path, list(res), {SUCCESS: ([m.value for m in ms], [m.ci_low for m in ms], [m.ci_high for m in ms])},
                    xlabel="share p of the target's words the attacker knows", ylabel="share of targets",
                    title="focused attack")
        return ctx.rel(path)
