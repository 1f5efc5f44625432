"""Biggio et al. 2012 gradient poisoning of a scikit-learn logistic regression on breast-cancer: 20 crafted
points (4.7% of the training set) raise the retrained victim's test error significantly, and more than as
many label flips do."""
from pathlib import Path

from sklearn.linear_model import LogisticRegression

from mlwarden.core.registry import all_threats
from mlwarden.core.target import sklearn_target
from mlwarden.core.threat import Context


def test_twenty_poisons_raise_the_error_of_a_logistic_regression(tmp_path):
    from mlwarden.io.datasets import load_builtin
    d = load_builtin("breast-cancer")
    est = LogisticRegression(max_iter=5000).fit(d.x_train.numpy(), d.y_train.numpy())
    ctx = Context(target=sklearn_target(est, 2, d.input_shape), data=d, evidence_dir=Path(tmp_path) / "e" / "g")
    t = all_threats()["gradient-poisoning"]
    assert t.skip_reason(ctx) is None
    f = t.run(ctx, t.params_for("quick", {"poisons": [20]}))
    row = f.details["table"][0]
    low = float(row["change (points, 95% CI)"].split("(")[1].split(" to ")[0])
    assert low > 0, row                                          # the rise in error excludes 0
    poisoned, flips = f.metric("20 poisons: test error"), f.metric("20 label flips: test error")
    assert poisoned.value > flips.value and poisoned.value > f.metric("clean: test error").value, row


def test_gradient_poisoning_applies_to_binary_linear_sklearn_models_only(digits, digits_mlp, tmp_path):
    from mlwarden.core.target import TorchTarget
    ctx = Context(target=TorchTarget(digits_mlp, 10, digits.input_shape), data=digits, evidence_dir=tmp_path)
    assert "binary linear scikit-learn" in all_threats()["gradient-poisoning"].skip_reason(ctx)
