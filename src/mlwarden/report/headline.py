"""The one number per finding that says how exposed the model is (with what chance would give), shared by
the harden comparison and `mlwarden diff`."""
from __future__ import annotations

from ..core.finding import Finding, Metric, Status

MEMBERSHIP = ("membership-inference", "label-only-membership", "lm-membership")   # headlined by TPR at 1% FPR, chance 1%
AUDITED = "(audited model only)"   # a membership metric's scope when it is the audited model's, not the pooled


def headline(f: Finding, name: str | None = None, audited: bool = False) -> dict | None:
    """The one number that says how exposed the model is to this threat, with what chance would give.
    `name` picks the same metric in an 'after' finding as in its 'before'. `audited`: a membership threat's
    number on the audited model itself (its primary attack, calibrated by the reference models), not pooled
    over the reference models, whose leakage is the recipe's."""
    ms = {m.name: m for m in f.metrics}
    if name is not None and name in ms:
        m = ms[name]
    elif f.details.get("headline_metric") in ms:   # a threat that names its own headline number
        m = ms[f.details["headline_metric"]]
    elif f.threat in MEMBERSHIP and audited:
        m = ms.get(f"{f.details.get('primary')} {AUDITED} TPR at 1% FPR")
    elif f.threat in MEMBERSHIP:
        tpr = [m for m in f.metrics if m.name.endswith("TPR at 1% FPR") and AUDITED not in m.name]
        m = max(tpr, key=lambda m: m.ci_low or 0.0) if tpr else None
    elif f.family == "model-tricking":
        m = ms.get("robust_accuracy")
    elif f.threat == "secret-sharer":
        m = ms.get("canaries extracted")
    elif f.family == "model-extraction":
        m = f.metrics[0] if f.metrics else None
    else:
        m = None
    if m is None:
        return None
    if f.threat in MEMBERSHIP:
        out = _pack(f, m, 0.01, "higher")
        if AUDITED in m.name and not m.reliable and f.status is Status.OK:   # the only check on this number
            from ..privacy.roc import MIN_FALSE_POSITIVES   # (scikit-learn's metrics: not on every report's path)
            out["unreliable_why"] = (f"{m.name} rests on {_nonmembers(f)} non-members; a 1% FPR needs "
                                     f"{100 * MIN_FALSE_POSITIVES} (give more test data)")
        return out
    if f.family == "model-tricking":
        return _pack(f, m, None, "lower")
    return _pack(f, m, None, f.details.get("headline_worse", "higher"))   # a threat's own headline says its direction


def _pack(f: Finding, m: Metric, chance, worse) -> dict:
    return {"metric": m.name, "label": m.name, "value": m.value, "ci_low": m.ci_low, "ci_high": m.ci_high,
            "n": m.n, "unit": m.unit, "text": m.text(), "chance": chance, "worse": worse,
            "reliable": m.reliable and f.status is Status.OK}


def _nonmembers(f: Finding) -> str:
    rows = [r for r in f.details.get("table", []) if r.get("attack") == f.details.get("primary")]
    return str(rows[0].get("target_only_nonmembers")) if rows else "too few"


def paired(old: Finding, new: Finding, audited: bool = False) -> tuple[dict | None, dict | None]:
    """The same headline metric in two findings of one threat. Usually the one the old finding headlines;
    for membership inference, whose headline is its strongest attack, the attack that is strongest on
    either side: on a private model every attack is at chance and the strongest is noise, so a baseline's
    pick would hide the attack that the other model loses to. `audited` (`mlwarden diff`): membership on
    each side's audited model, by the primary attack of both."""
    if audited and old.threat in MEMBERSHIP:   # the same metric on both sides, never another in its place
        ho, hn = headline(old, audited=True), headline(new, audited=True)
        return ho, (hn if ho and hn and hn["metric"] == ho["metric"] else None)
    name = None
    if old.threat in MEMBERSHIP:
        a, b = headline(old), headline(new)
        if a and b:
            name = max((a, b), key=lambda h: h["ci_low"] or 0.0)["metric"]
    ho = headline(old, name)
    return ho, (headline(new, ho["metric"]) if ho else None)
