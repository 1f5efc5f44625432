"""Support vector machines copied through `mlwarden serve` (a scikit-learn SVM behind the OIP v2 API): a
linear SVM from its margins by equation solving with d + 1 queries, a binary linear SVM from labels alone by
line search to the boundary (Lowd & Meek 2005), and an RBF SVM by adaptive retraining near the margin
(Tramer et al. 2016), each with agreement against the queries spent."""
from sklearn.svm import SVC, LinearSVC

from mlwarden.core.registry import all_threats
from mlwarden.core.target import sklearn_target
from mlwarden.core.threat import Context
from mlwarden.io.http_target import HttpTarget
from mlwarden.serve.guards import GuardConfig

from .conftest import running


def _flat(d):
    return d.x_train.reshape(len(d.x_train), -1).numpy(), d.y_train.numpy()


def _run(threat, url, data, tmp_path, **params):
    target = HttpTarget(url, data.n_classes, data.input_shape)
    ctx = Context(target=target, data=data, evidence_dir=tmp_path / "evidence" / threat)
    t = all_threats()[threat]
    return t.run(ctx, t.params_for("quick", params))


def test_linear_svm_from_margins_with_d_plus_1_queries(digits, tmp_path):
    svm = LinearSVC(max_iter=20000).fit(*_flat(digits))
    with running(sklearn_target(svm, 10, digits.input_shape), digits.space, GuardConfig()) as url:
        f = _run("extract-equation-solving", url, digits, tmp_path)
    assert f.queries == 65 and "exact equation solving" in f.details["method"]
    assert f.metrics[0].value >= 0.999 and f.metrics[1].value >= 0.999, f.headline


def test_binary_linear_svm_from_labels_by_line_search(cancer, tmp_path):
    svm = LinearSVC(max_iter=20000).fit(*_flat(cancer))
    with running(sklearn_target(svm, 2, cancer.input_shape), cancer.space, GuardConfig(output="label")) as url:
        f = _run("extract-linear-boundary", url, cancer, tmp_path)
    test, unif = f.metrics[0], f.metrics[1]
    assert test.value >= 0.99 and unif.value >= 0.99, f.headline
    assert f.queries == f.metric("queries").value and f.details["lowd_meek_bound"] == 31 * 20
    assert "alpha" in f.details and f.details["answers"] == "labels"


def test_rbf_svm_by_adaptive_queries_near_the_margin(digits, tmp_path):
    svm = SVC(kernel="rbf").fit(*_flat(digits))
    with running(sklearn_target(svm, 10, digits.input_shape), digits.space, GuardConfig(output="label")) as url:
        f = _run("extract-svm-margin", url, digits, tmp_path, rounds=4)
    curve = f.details["table"]
    assert [r["queries"] for r in curve] == [200, 300, 400, 500, 600] and f.queries == 600
    assert f.metrics[0].value >= 0.9, f.headline            # most test digits labelled as the victim does
    assert (tmp_path / f.evidence[0]).exists()


def test_line_search_skips_a_multiclass_model(digits, tmp_path):
    svm = LinearSVC(max_iter=20000).fit(*_flat(digits))
    with running(sklearn_target(svm, 10, digits.input_shape), digits.space, GuardConfig(output="label")) as url:
        f = _run("extract-linear-boundary", url, digits, tmp_path)
    assert f.status.value == "skipped" and "binary" in f.headline
