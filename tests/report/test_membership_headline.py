"""The membership number `mlwarden diff` judges: the audited model's own, with the reason it cannot be judged
when the test split is too small for a 1% FPR, and not compared when the reference models differ."""
import numpy as np

from mlwarden.core.finding import Finding, Metric, Severity, Status
from mlwarden.core.stats import difference_interval, paired_tpr_difference, tpr_at_fpr
from mlwarden.report.diff import _membership_change, _references_differ, rate_change
from mlwarden.threats.membership.membership_inference import _scores_record
from mlwarden.report.headline import paired

REFS = {"recipe": "mlp", "recipe_key": "a", "data": "d", "count": 8, "seed": 0, "cached": 0}


def _finding(shift: float, nonmembers: int, refs=REFS, seed: int = 0) -> Finding:
    """What membership_inference._finding writes, for scores drawn here: members N(shift, 1), non-members N(0, 1)
    (898 members); pooled metrics, the primary's on the audited model, the table, the audited scores."""
    rng = np.random.default_rng(seed)
    members, non = rng.normal(shift, 1, 898), rng.normal(0, 1, nonmembers)
    k = round(tpr_at_fpr(members, non) * 898)
    audited = Metric.rate("lira-online (audited model only) TPR at 1% FPR", k, 898, reliable=nonmembers * 0.01 >= 5)
    return Finding("membership-inference", "data-extraction", "t", Status.OK, Severity.LOW, "h",
                   metrics=[Metric.rate("rmia-online TPR at 1% FPR", 130, 3594), audited],
                   details={"primary": "lira-online", "reference_models": refs,
                            "table": [{"attack": "lira-online", "target_only_nonmembers": nonmembers}],
                            "audited_scores": {"attack": "lira-online", "data": "d", **_scores_record(
                                np.r_[members, non], np.r_[np.ones(898, bool), np.zeros(nonmembers, bool)])}})


def _row(old: Finding, new: Finding) -> dict:
    a, b = paired(old, new, audited=True)
    row = {"before": a, "after": b, **rate_change(a, b)}
    row.update(_membership_change(old, new, row))
    return row


def test_the_audited_models_number_is_compared_not_the_pooled():
    a, b = paired(_finding(0.5, 899), _finding(1.5, 899), audited=True)
    assert a["metric"] == b["metric"] == "lira-online (audited model only) TPR at 1% FPR"
    row = _row(_finding(0.5, 899), _finding(1.5, 899))
    assert row["regression"] and row["change"]["method"] == "paired bootstrap" and row["change"]["ci_low"] > 0
    same = _row(_finding(0.5, 899), _finding(0.5, 899, seed=1))   # another draw of the same leakage
    assert not same["regression"] and same["change"]["ci_low"] < 0 < same["change"]["ci_high"]
    pooled, _ = paired(_finding(0.5, 899), _finding(1.5, 899))   # harden's default: the pooled strongest
    assert pooled["metric"] == "rmia-online TPR at 1% FPR"


def test_the_threshold_noise_is_in_the_interval():
    """Two draws of the same score distributions: the members' binomial interval alone (Newcombe) calls a
    regression between them far more often than 1 in 40; the paired bootstrap, which sets the threshold again
    from resampled non-members, does not (measured over 40 pairs of draws)."""
    newcombe = boot = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        draws = [(rng.normal(1.5, 1, 898), rng.normal(0, 1, 899)) for _ in range(2)]
        k = [round(tpr_at_fpr(m, n) * 898) for m, n in draws]
        newcombe += difference_interval(k[0], 898, k[1], 898)[1] > 0
        boot += paired_tpr_difference(draws[0], draws[1], draws=400)[1] > 0
    print(f"false regressions in 40: Newcombe {newcombe}, paired bootstrap {boot}")
    assert boot <= 2 < newcombe


def test_too_few_non_members_name_why_the_number_is_not_judged():
    row = _row(_finding(0.5, 450), _finding(1.5, 450))
    assert not row["regression"]
    assert "before: lira-online (audited model only) TPR at 1% FPR rests on 450 non-members; a 1% FPR needs 500" \
        in row["incomparable"]
    old = _finding(0.5, 899)
    old.details.pop("audited_scores")   # a report from before the scores were kept: no interval, no verdict
    row = _row(old, _finding(1.5, 899))
    assert not row["regression"] and row["incomparable"].startswith("the audited model's scores are not in both")
    assert row["change"] is None   # and no interval shown beside that verdict
    other = _finding(1.5, 899)
    other.details["audited_scores"]["data"] = "another data set"   # the same sizes, other points: not paired
    row = _row(_finding(0.5, 899), other)
    assert not row["regression"] and row["incomparable"] == "the two reports scored other points or with another attack"


def test_reference_models_that_differ_are_named():
    assert _references_differ(REFS, {**REFS, "seed": 3, "cached": 8}) is None   # another sample of one set
    assert _references_differ(None, None) is None                               # no recipe on either side
    assert _references_differ(REFS, {**REFS, "recipe_key": "b"}) == (
        "the reference models differ (recipe 'mlp' -> 'mlp' (its settings)), so they calibrate the attack otherwise")
    assert "count 8 -> 16" in _references_differ(REFS, {**REFS, "count": 16})
    assert _references_differ(None, REFS).startswith("reference models on one side only (baseline has none")


def test_a_baseline_with_a_malformed_reference_record_is_refused():
    import pytest
    from mlwarden.core.finding import FindingRecord
    base = {"threat": "membership-inference", "family": "data-extraction", "title": "t", "status": "ok",
            "severity": "low", "headline": "h"}
    FindingRecord.model_validate({**base, "details": {"reference_models": REFS, "primary": "lira-online"}})
    for bad in (["x"], "mlp", {"recipe_key": [1]}, 7):
        with pytest.raises(ValueError, match="details.reference_models must be null or an object of values"):
            FindingRecord.model_validate({**base, "details": {"reference_models": bad}})
    with pytest.raises(ValueError, match="details.primary must be a string"):
        FindingRecord.model_validate({**base, "details": {"primary": {"x": 1}}})
