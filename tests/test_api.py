"""The Python API returns a Report that renders inline and saves the same files as the CLI."""
from sklearn.linear_model import LogisticRegression

import mlwarden
from mlwarden.core.finding import Status


def test_audit_torch_model_returns_report(tmp_path, digits, digits_mlp):
    rep = mlwarden.audit(digits_mlp, digits, threats=["fgsm", "adversarial-patch"], out=tmp_path,
                         params={"adversarial-patch": {"steps": 50, "n_samples": 100}, "fgsm": {"n_samples": 100}})
    assert isinstance(rep, mlwarden.Report)
    f = rep.finding("fgsm")
    assert f.status is Status.OK and f.metric("robust_accuracy").value < f.metric("clean_accuracy").value
    html = rep._repr_html_()
    assert "fgsm" in html and "data:image/png;base64" in html  # the patch figure is embedded
    assert (tmp_path / "report.json").exists() and (tmp_path / "report.sarif").exists()


def test_sklearn_model_gets_black_box_threats_only(tmp_path, digits):
    clf = LogisticRegression(max_iter=300).fit(digits.x_train.flatten(1).numpy(), digits.y_train.numpy())
    rep = mlwarden.audit(clf, digits, threats=["fgsm", "square"], out=tmp_path,
                         params={"square": {"n_samples": 50, "max_queries": 300}})
    assert rep.finding("fgsm").status is Status.SKIPPED
    assert "needs white-box access" in rep.finding("fgsm").headline
    sq = rep.finding("square")
    assert sq.status is Status.OK and sq.queries > 0
    assert sq.metric("robust_accuracy").value < sq.metric("clean_accuracy").value - 0.2


def test_time_budget_turns_a_slow_attack_into_a_failed_finding(tmp_path, digits, digits_mlp):
    rep = mlwarden.audit(digits_mlp, digits, threats=["pgd-linf"], out=tmp_path, time_budget_s=1e-6,
                         params={"pgd-linf": {"steps": 1000}})
    f = rep.finding("pgd-linf")
    assert f.status is Status.FAILED and "time budget" in f.error
    assert rep.exit_code("low") == 1
