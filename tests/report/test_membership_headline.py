"""The membership number `mlwarden diff` judges: the audited model's own, with the reason it cannot be judged
when the test split is too small for a 1% FPR, and not compared when the reference models differ."""
from mlwarden.core.finding import Finding, Metric, Severity, Status
from mlwarden.report.diff import _references_differ, rate_change
from mlwarden.report.headline import paired

REFS = {"recipe": "mlp", "recipe_key": "a", "data": "d", "count": 8, "seed": 0, "cached": 0}


def _finding(k_audited: int, nonmembers: int, refs=REFS) -> Finding:
    # what membership_inference._finding writes: pooled metrics, the primary's on the audited model, the table
    audited = Metric.rate("lira-online (audited model only) TPR at 1% FPR", k_audited, 898,
                          reliable=nonmembers * 0.01 >= 5)
    return Finding("membership-inference", "data-extraction", "t", Status.OK, Severity.LOW, "h",
                   metrics=[Metric.rate("rmia-online TPR at 1% FPR", 130, 3594), audited],
                   details={"primary": "lira-online", "reference_models": refs,
                            "table": [{"attack": "lira-online", "target_only_nonmembers": nonmembers}]})


def test_the_audited_models_number_is_compared_not_the_pooled():
    a, b = paired(_finding(8, 899), _finding(27, 899), audited=True)
    assert a["metric"] == b["metric"] == "lira-online (audited model only) TPR at 1% FPR"
    change = rate_change(a, b)
    assert change["regression"] and change["change"]["ci_low"] > 0
    pooled, _ = paired(_finding(8, 899), _finding(27, 899))   # harden's default: the pooled strongest
    assert pooled["metric"] == "rmia-online TPR at 1% FPR"


def test_too_few_non_members_name_why_the_number_is_not_judged():
    a, b = paired(_finding(8, 450), _finding(27, 450), audited=True)
    change = rate_change(a, b)
    assert not change["regression"]
    assert "before: lira-online (audited model only) TPR at 1% FPR rests on 450 non-members; a 1% FPR needs 500" \
        in change["incomparable"]


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
