"""Dictionary attack on a spam filter (Nelson et al. 2008, "Exploiting Machine Learning to Subvert Your Spam
Filter", LEET '08, section 3.1).

Threat model: the attacker sends mail that the victim's users label spam and that the filter is retrained
on (training access through the recipe; no access to the model is needed). Each attack message holds a whole
dictionary of words, so after retraining those words look spammy and legitimate mail containing them is
flagged. Budget: attack messages as a fraction of the clean training mail (0.1-5%). Dictionaries: optimal,
the victim's own ham vocabulary (an upper bound), and realistic, a word list independent of the victim's
mail (the standard-library docstrings that ship with Python, in place of Nelson et al.'s Usenet list).
Measured: share of test ham marked spam or unsure and share of test spam let through, against control."""
from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Literal

from pydantic import Field

from ...core import severity
from ...core.finding import Finding, Severity, Status
from ...core.registry import register
from ...core.target import Access
from ...core.threat import Context, Params, Threat
from ...text.corpus import stdlib_docstrings
from ...text.messages import MODALITY, decode
from ...text.spambayes import tokenize, words
from .spam_common import (ATLAS, FAMILY, HAM_FLAGGED, HAM_SPAM, REMEDY, SPAM_PASSED, attack_messages, copies_for,
                          dictionary_words, error_rates, failure_mode, fit_poisoned, worst_rate, skip_reason)

Dictionary = Literal["optimal", "realistic"]


class DictionaryParams(Params):
    controls: list[Annotated[float, Field(gt=0, le=0.5)]] = Field(
        [0.001, 0.005, 0.01, 0.02, 0.05], min_length=1, description="attack messages as fractions of the clean "
                                                                     "training mail")
    headline_control: float = Field(0.01, gt=0, le=0.5, description="the control the headline and severity use")
    dictionaries: list[Dictionary] = Field(["optimal", "realistic"], min_length=1)
    split: list[Annotated[int, Field(ge=1)]] = Field([300, 100, 30], description="the adapted attack, at the headline control: messages of "
                             "this many words each (the dictionary cut into chunks), small enough to slip past a "
                             "sanitizer that judges each message by its impact; [] for the whole dictionary only")


def dictionary(kind: str, x_train, y_train) -> list[str]:
    """The attacker's word list: the victim's ham vocabulary (optimal), or words of the Python standard
    library's docstrings (realistic: independent of the victim's mail)."""
    if kind == "optimal":
        ham = [t for t, y in zip(decode(x_train), y_train.tolist()) if y == 0]
        return dictionary_words(set().union(*map(tokenize, ham)))
    return words(stdlib_docstrings())


def dictionary_attack(recipe, data, kind: str, controls: list[float], seed: int = 0,
                      per_message: int = 0) -> list[dict]:
    """The victim retrained at each control with dictionary attack messages (each the whole dictionary, or
    `per_message` words of it): one row per control with its error rates (Metric objects) and, through a
    sanitizer, what it removed."""
    words_ = dictionary(kind, data.x_train, data.y_train)
    rows = []
    for c in controls:
        k = copies_for(c, len(data.x_train))
        flt, removal = fit_poisoned(recipe, data, *attack_messages(words_, k, per_message), seed)
        rows.append({"control": c, "messages": k, "rates": error_rates(flt, data.x_test, data.y_test),
                     "removal": removal, "words": len(words_),
                     "per_message": per_message if 0 < per_message < len(words_) else len(words_), "kind": kind})
    return rows


@register
class SpamDictionary(Threat):
    """Dictionary attack: spam stuffed with ordinary words teaches the filter that ordinary words are spammy."""

    name = "spam-dictionary"
    family = FAMILY
    title = "Spam filter poisoned by dictionary attack mail"
    needs = Access.LABELS
    modalities = (MODALITY,)
    atlas = ATLAS
    Params = DictionaryParams
    remedy = REMEDY

    def skip_reason(self, ctx: Context) -> str | None:
        return skip_reason(ctx) or super().skip_reason(ctx)

    def run(self, ctx: Context, params: DictionaryParams) -> Finding:
        controls = sorted(set(params.controls) | {params.headline_control})
        clean_flt = ctx.recipe.fit(ctx.data.x_train, ctx.data.y_train, seed=ctx.seed)
        clean = error_rates(clean_flt, ctx.data.x_test, ctx.data.y_test)
        at = f"{100 * params.headline_control:g}% control"
        curves, table, candidates = {}, [], []
        for kind in params.dictionaries:
            ctx.check_time()
            rows = dictionary_attack(ctx.recipe, ctx.data, kind, controls, ctx.seed)
            curves[kind] = rows
            candidates.append(next(r for r in rows if r["control"] == params.headline_control))
            for per in params.split:
                ctx.check_time()
                candidates += dictionary_attack(ctx.recipe, ctx.data, kind, [params.headline_control], ctx.seed, per)
        for r in [r for rows in curves.values() for r in rows] + [c for c in candidates if c not in curves[c["kind"]]]:
            table.append({"dictionary": r["kind"], "words per message": r["per_message"],
                          "control": f"{100 * r['control']:g}%", "attack messages": r["messages"],
                          **{k: m.text() for k, m in r["rates"].items() if k != HAM_SPAM},
                          **{m.name: m.text() for m in r["removal"]}})
        scored = [(failure_mode(clean, c["rates"]), c) for c in candidates]
        (mode, rise), head = max(scored, key=lambda s: s[0][1])
        worst = worst_rate(clean, head["rates"])
        metrics = [replace(m, name=f"clean: {m.name}") for m in clean.values()]
        for c in candidates:
            if c["per_message"] == c["words"]:      # the whole-dictionary attack of each word list
                metrics += [replace(m, name=f"{c['kind']} dictionary, {at}: {m.name}")
                            for m in [*c["rates"].values(), *c["removal"]]]
        strongest = f"strongest attack at {at}"
        metrics += [replace(m, name=f"{strongest}: {m.name}") for m in [*head["rates"].values(), *head["removal"]]]
        how = f"{head['kind']} dictionary, " + ("whole dictionary per message" if head["per_message"] == head["words"]
                                                 else f"{head['per_message']} words per message")
        sev = severity.POISONING.grade(rise)
        r = head["rates"]
        headline = (f"{head['messages']} attack messages ({100 * params.headline_control:g}% of the training mail, "
                    f"{how}): {r[HAM_FLAGGED].text()} of test ham marked spam or unsure "
                    f"(clean {100 * clean[HAM_FLAGGED].value:.1f}%), {r[SPAM_PASSED].text()} of spam let through "
                    f"(clean {100 * clean[SPAM_PASSED].value:.1f}%)")
        notes = [f"Victim: {getattr(clean_flt, 'name', ctx.recipe.name)}, retrained on {len(ctx.data.x_train)} clean "
                 "messages plus the attack mail at each control.",
                 f"How it failed: {mode}.",
                 f"Strongest attack at {at}: {how} (of the whole-dictionary messages of Nelson et al." +
                 (f" and the adapted ones of {', '.join(map(str, params.split))} words each" if params.split else "") +
                 ", the one that raised an error rate most beyond the clean filter's interval).",
                 "Dictionaries: " + "; ".join(f"{k} {rows[0]['words']} words" for k, rows in curves.items()) +
                 " (optimal: every word of the victim's ham training mail, an upper bound; realistic: the words of "
                 "the Python standard library's docstrings, independent of the victim's mail, where Nelson et al. "
                 "used a Usenet word list)."]
        if head["removal"]:
            notes.append("The recipe's sanitizer judged every training message, the attack mail included: the "
                         "removal rows count what it took out.")
        return self.finding(ctx, params, status=Status.OK, severity=sev if rise > 0 else Severity.LOW,
                            headline=headline, metrics=metrics, evidence=[self._plot(ctx, curves, clean)],
                            details={"headline_metric": f"{strongest}: {worst}", "strongest": how,
                                     "failure_mode": mode, "rise_lower_bound": rise, "table": table, "notes": notes,
                                     "severity_rule": severity.POISONING.measures})

    def _plot(self, ctx: Context, curves: dict, clean) -> str:
        from ...plots import rate_curves
        series = {}
        for kind, rows in curves.items():
            for name, short in ((HAM_FLAGGED, "ham flagged"), (SPAM_PASSED, "spam let through")):
                ms = [r["rates"][name] for r in rows]
                series[f"{short} ({kind})"] = ([m.value for m in ms], [m.ci_low for m in ms], [m.ci_high for m in ms])
        xs = [r["control"] for r in next(iter(curves.values()))]
        path = ctx.evidence_path("dictionary-attack.png")
        rate_curves(path, xs, series, xlabel="attacker control (% of training mail)", ylabel="share of test mail",
                    title=f"dictionary attack (clean: ham flagged {100 * clean[HAM_FLAGGED].value:.1f}%, "
                          f"spam let through {100 * clean[SPAM_PASSED].value:.1f}%)", percent_x=True)
        return ctx.rel(path)
