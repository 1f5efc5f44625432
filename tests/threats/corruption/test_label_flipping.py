"""Label flipping on the digits MLP (its built-in recipe, seed 0), and the sanitizers against it: k-NN label
sanitization (Paudice et al. 2018) and the sphere/slab outlier filter (Steinhardt et al. 2017), with the
adaptive flips that stay inside the filter's feasible set (Koh et al. 2018)."""
from pathlib import Path

import pytest

from mlwarden.core.recipe import BUILTIN_RECIPES
from mlwarden.core.registry import all_threats, get_defense
from mlwarden.core.target import TorchTarget
from mlwarden.core.threat import Context


def _run(digits, digits_mlp, tmp_path, defense=None, defense_params=None, **params):
    recipe = BUILTIN_RECIPES["mlp"]
    if defense:
        d = get_defense(defense)
        recipe, _ = d.defend_recipe(recipe, d.params_for("quick", defense_params), digits)
    ctx = Context(target=TorchTarget(digits_mlp, 10, digits.input_shape), data=digits,
                  evidence_dir=Path(tmp_path) / "evidence" / "label-flipping", recipe=recipe)
    t = all_threats()["label-flipping"]
    return t.run(ctx, t.params_for("quick", params))


def _row(f, strategy, budget):
    return next(r for r in f.details["table"] if r["strategy"] == strategy and r["budget"] == budget)


def test_random_flips_cost_accuracy_and_knn_sanitization_recovers_half(digits, digits_mlp, tmp_path):
    plain = _run(digits, digits_mlp, tmp_path, budgets=[0.3], strategies=["random"])
    clean = plain.metric("clean: test accuracy")
    flipped = plain.metric("random 30%: test accuracy")
    assert plain.details["headline_metric"] == "random 30%: test accuracy"
    change = _row(plain, "random", "30%")["change (points, 95% CI)"]
    assert float(change.split(" to ")[1].rstrip(")")) < 0, change   # the loss is significant: its interval excludes 0
    knn = _run(digits, digits_mlp, tmp_path, "knn-label-sanitization", budgets=[0.3], strategies=["random"])
    after = knn.metric("random 30%: test accuracy")
    lost, recovered = clean.value - flipped.value, after.value - flipped.value
    assert recovered >= lost / 2, (clean.text(), flipped.text(), after.text())
    assert knn.metric("random 30%: planted labels restored by the sanitizer").value >= 0.8
    assert knn.metric("random 30%: clean labels changed by the sanitizer").value <= 0.03
    assert (tmp_path / plain.evidence[0]).exists()


def test_targeted_flips_take_the_source_class(digits, digits_mlp, tmp_path):
    f = _run(digits, digits_mlp, tmp_path, budgets=[0.4], headline_budget=0.4, strategies=["targeted"], source=3,
             target=8)
    recall = f.metric("targeted 40%: recall of class 3")
    assert f.details["source"] == 3 and recall.n == 46
    change = _row(f, "targeted", "40%")["recall change (points, 95% CI)"]
    assert float(change.split(" to ")[1].rstrip(")")) < 0, (recall.text(), change)   # recall of 3s falls


def test_adaptive_flips_slip_past_the_sphere_filter(digits, digits_mlp, tmp_path):
    f = _run(digits, digits_mlp, tmp_path, "outlier-filter", {"rule": "sphere", "remove": 0.2}, budgets=[0.3],
             strategies=["targeted", "adaptive"], source=3, target=8)
    plain = f.metric("targeted 30%: planted points removed by the sanitizer")
    adaptive = f.metric("adaptive 30%: planted points removed by the sanitizer")
    assert adaptive.ci_high < plain.ci_low, (plain.text(), adaptive.text())


def test_label_flipping_needs_the_recipe(digits, digits_mlp, tmp_path):
    ctx = Context(target=TorchTarget(digits_mlp, 10, digits.input_shape), data=digits, evidence_dir=tmp_path)
    assert "needs training access" in all_threats()["label-flipping"].skip_reason(ctx)
    with pytest.raises(Exception, match="less than or equal to 0.5"):
        all_threats()["label-flipping"].params_for("quick", {"budgets": [0.7]})
