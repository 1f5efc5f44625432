"""The one number per finding that says how exposed the model is (with what chance would give), shared by
the harden comparison and `mlwarden diff`."""
from __future__ import annotations

from ..core.finding import Finding, Status

MEMBERSHIP = ("membership-inference", "label-only-membership", "lm-membership")   # headlined by TPR at 1% FPR, chance 1%


def headline(f: Finding, name: str | None = None) -> dict | None:
    """The one number that says how exposed the model is to this threat, with what chance would give.
    `name` picks the same metric in an 'after' finding as in its 'before'."""
    def pack(m, chance, worse, label=None):
        return {"metric": m.name, "label": label or m.name, "value": m.value, "ci_low": m.ci_low,
                "ci_high": m.ci_high, "n": m.n, "unit": m.unit, "text": m.text(), "chance": chance,
                "worse": worse, "reliable": m.reliable and f.status is Status.OK}
    ms = {m.name: m for m in f.metrics}
    if name is not None and name in ms:
        m = ms[name]
    elif f.details.get("headline_metric") in ms:   # a threat that names its own headline number
        m = ms[f.details["headline_metric"]]
    elif f.threat in MEMBERSHIP:
        tpr = [m for m in f.metrics if m.name.endswith("TPR at 1% FPR") and "audited model only" not in m.name]
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
        return pack(m, 0.01, "higher")
    if f.family == "model-tricking":
        return pack(m, None, "lower")
    return pack(m, None, f.details.get("headline_worse", "higher"))   # a threat's own headline says its direction


def paired(old: Finding, new: Finding) -> tuple[dict | None, dict | None]:
    """The same headline metric in two findings of one threat. Usually the one the old finding headlines;
    for membership inference, whose headline is its strongest attack, the attack that is strongest on
    either side: on a private model every attack is at chance and the strongest is noise, so a baseline's
    pick would hide the attack that the other model loses to."""
    name = None
    if old.threat in MEMBERSHIP:
        a, b = headline(old), headline(new)
        if a and b:
            name = max((a, b), key=lambda h: h["ci_low"] or 0.0)["metric"]
    ho = headline(old, name)
    return ho, (headline(new, ho["metric"]) if ho else None)
