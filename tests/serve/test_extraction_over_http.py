"""Model extraction through a real `mlwarden serve` on 127.0.0.1: equation solving with exact scores,
the L-BFGS fallback with rounded scores, and the binary case."""
from pathlib import Path

import pytest

from mlwarden.core.registry import all_threats
from mlwarden.core.target import TorchTarget
from mlwarden.core.threat import Context
from mlwarden.io.http_target import HttpTarget
from mlwarden.serve.guards import GuardConfig

from .conftest import running


def steal(url, data, tmp_path: Path):
    target = HttpTarget(url, data.n_classes, data.input_shape)
    threat = all_threats()["extract-equation-solving"]
    ctx = Context(target=target, data=data, evidence_dir=tmp_path / "evidence" / threat.name)
    f = threat.run(ctx, threat.params_for("quick"))
    return f, target


def test_softmax_regression_from_exact_scores_in_d_plus_1_queries(digits, digits_logreg, tmp_path):
    with running(TorchTarget(digits_logreg, 10, digits.input_shape), digits.space, GuardConfig()) as url:
        f, target = steal(url, digits, tmp_path)
    assert f.queries == 65 and target.queries == 65  # evaluation queries are not charged to the attack
    assert f.metric("agreement on test data (1 - R_test)").value >= 0.999
    assert f.metric("agreement on uniform inputs (1 - R_unif)").value >= 0.999
    assert f.details["method"] == "exact equation solving" and f.severity.value == "critical"
    assert (tmp_path / f.evidence[0]).exists()


def test_rounded_scores_force_the_lbfgs_fallback_within_c_times_d_plus_1(digits, digits_logreg, tmp_path):
    guards = GuardConfig(output="rounded", decimals=2)
    with running(TorchTarget(digits_logreg, 10, digits.input_shape), digits.space, guards) as url:
        f, _ = steal(url, digits, tmp_path)
    assert f.queries <= 650 and "loss minimisation" in f.details["method"]
    assert f.metric("agreement on test data (1 - R_test)").value >= 0.99


def test_binary_logistic_regression_in_31_queries(cancer, cancer_logreg, tmp_path):
    with running(TorchTarget(cancer_logreg, 2, cancer.input_shape), cancer.space, GuardConfig()) as url:
        f, _ = steal(url, cancer, tmp_path)
    assert f.queries == 31
    assert f.metric("agreement on test data (1 - R_test)").value >= 0.999
    assert f.metric("agreement on uniform inputs (1 - R_unif)").value >= 0.999


def test_label_only_server_is_skipped_by_equation_solving(digits, digits_logreg, tmp_path):
    with running(TorchTarget(digits_logreg, 10, digits.input_shape), digits.space, GuardConfig(output="label")) as url:
        target = HttpTarget(url, 10, digits.input_shape)
        assert target.access.value == "labels"
        ctx = Context(target=target, data=digits, evidence_dir=tmp_path)
        assert "needs scores" in all_threats()["extract-equation-solving"].skip_reason(ctx)


@pytest.mark.parametrize("threat", ["square", "hopskipjump"])
def test_black_box_attacks_run_unchanged_over_http(digits, digits_mlp, tmp_path, threat):
    output = "probabilities" if threat == "square" else "label"
    with running(TorchTarget(digits_mlp, 10, digits.input_shape), digits.space, GuardConfig(output=output)) as url:
        target = HttpTarget(url, 10, digits.input_shape)
        t = all_threats()[threat]
        params = {"n_samples": 20, "max_queries": 300} if threat == "square" else {"n_samples": 10, "max_iter": 5}
        ctx = Context(target=target, data=digits, evidence_dir=tmp_path / threat)
        f = t.run(ctx, t.params_for("quick", params))
    assert f.status.value == "ok", f.headline
    assert f.metric("robust_accuracy").value < f.metric("clean_accuracy").value
    assert target.http_requests > 0 and target.queries > 0


def test_small_mlp_extracted_by_optimisation_over_many_scored_queries(digits, digits_mlp, tmp_path):
    from mlwarden.core.recipe import BUILTIN_RECIPES
    with running(TorchTarget(digits_mlp, 10, digits.input_shape), digits.space, GuardConfig()) as url:
        target = HttpTarget(url, 10, digits.input_shape)
        threat = all_threats()["extract-retraining"]
        ctx = Context(target=target, data=digits, evidence_dir=tmp_path / "evidence" / threat.name,
                      recipe=BUILTIN_RECIPES["mlp"])
        f = threat.run(ctx, threat.params_for("quick", {"strategy": "uniform", "budget": 5000, "epochs": 100}))
    assert f.queries == 5000 and f.details["answers"] == "probabilities"
    assert f.metric("agreement on test data (1 - R_test)").value >= 0.95  # synthetic queries only, no data


def test_decision_tree_extracted_by_path_finding_from_probabilities(tmp_path):
    from sklearn.tree import DecisionTreeClassifier

    from mlwarden.core.target import sklearn_target
    from mlwarden.io.datasets import load_builtin
    iris = load_builtin("iris", seed=0)
    tree = DecisionTreeClassifier(max_depth=3, random_state=0).fit(iris.x_train.numpy(), iris.y_train.numpy())
    with running(sklearn_target(tree, 3, iris.input_shape), iris.space, GuardConfig()) as url:
        target = HttpTarget(url, 3, iris.input_shape)
        threat = all_threats()["extract-path-finding"]
        ctx = Context(target=target, data=iris, evidence_dir=tmp_path / "evidence" / threat.name)
        f = threat.run(ctx, threat.params_for("quick"))
    assert f.details["complete"]
    assert f.metric("agreement on test data (1 - R_test)").value == 1.0
    assert f.metric("agreement on uniform inputs (1 - R_unif)").value >= 0.999
    assert 0 < f.queries < 5000 and f.queries == target.queries
