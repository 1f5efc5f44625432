"""The Python API returns a Report that renders inline and saves the same files as the CLI."""
from sklearn.linear_model import LogisticRegression

import mlwarden
from mlwarden.core.finding import Status
from mlwarden.report.diff import diff_reports
from mlwarden.report.report import Report


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
    assert rep.exit_code("low") == 3   # the gate cannot vouch for what it did not measure; 1 is for findings
    # a timed-out threat reads "timed out" where a severity would stand, never its placeholder info, in every
    # rendering and after a round trip through report.json (and a diff against a run where it finished)
    assert f.timed_out and f.grade == "timed out" and rep.summary_rows()[0][2] == "timed out"
    again = Report.load(tmp_path).finding("pgd-linf")
    assert again.timed_out and again.grade == "timed out"
    assert "| pgd-linf | failed | timed out |" in (tmp_path / "report.md").read_text()
    assert "sev skipped\">timed out<" in (tmp_path / "report.html").read_text()
    done = mlwarden.audit(digits_mlp, digits, threats=["pgd-linf"], out=tmp_path / "done",
                          params={"pgd-linf": {"steps": 5, "n_samples": 20}})
    row = diff_reports(rep, done)["rows"][0]
    assert row["severity"][0] == "timed out" and row["severity"][1] == done.finding("pgd-linf").severity.value


def test_harden_from_python_sweeps_and_returns_the_comparison(tmp_path, digits, digits_mlp):
    res = mlwarden.harden(digits_mlp, digits, "dp-sgd", recipe="mlp", out=tmp_path,
                          params={"epsilon": [1, 8], "epochs": 10, "one_run_canaries": 100},
                          threats=["membership-inference"],
                          threat_params={"membership-inference": {"n_reference": 2}})
    points = res.summary["points"]
    assert [p["label"] for p in points] == ["after-epsilon=1", "after-epsilon=8"]
    assert points[0]["facts"]["dp-sgd"]["epsilon_spent"] < points[1]["facts"]["dp-sgd"]["epsilon_spent"]
    assert all(p["accuracy"]["value"] < res.summary["before"]["accuracy"]["value"] for p in points)
    assert res.before.finding("membership-inference").status is Status.OK
    assert len(res.after) == 2 and res.exit_code(None) == 0
    assert (tmp_path / "harden.html").exists() and (tmp_path / "plots" / "tradeoff.png").exists()


def test_importing_the_subpackages_keeps_the_api_functions():
    """`import mlwarden.harden.run` (the CLI does) must not rebind mlwarden.harden to the subpackage."""
    import importlib
    importlib.import_module("mlwarden.harden.run")
    importlib.import_module("mlwarden.audit.runner")
    assert callable(mlwarden.harden) and callable(mlwarden.audit)


def test_audit_a_text_pipeline_from_python(sms_spam, tmp_path):
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from mlwarden.text.messages import decode
    pipe = make_pipeline(CountVectorizer(), LogisticRegression(max_iter=1000))
    pipe.fit(decode(sms_spam.x_train), sms_spam.y_train.numpy())
    rep = mlwarden.audit(pipe, sms_spam, threats=["spam-dictionary"], out=tmp_path / "run",
                         params={"spam-dictionary": {"controls": [0.05], "headline_control": 0.05,
                                                     "dictionaries": ["optimal"]}})
    f = rep.finding("spam-dictionary")
    assert f.status.value == "ok" and "LogisticRegression" in f.details["notes"][0]
    clean = f.metric("clean: test spam let through (marked ham)")
    assert clean.n == 224 and clean.value < 0.3                       # the pipeline is a working filter
    assert f.details["headline_metric"].startswith("strongest attack at 5% control")
    assert f.metric(f.details["headline_metric"]).n in (224, 1449)
