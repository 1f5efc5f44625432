"""`mlwarden harden --defense dp-sgd` through the generic harden path, end to end on a real digits MLP: the
before/after report, the saved hardened model in audit and serve, a sweep, and bad-input errors."""
import json

import httpx
import pytest

from .run import infer_body, mlwarden, screenshot, served

pytestmark = pytest.mark.slow   # end-to-end runs through the CLI


@pytest.fixture(scope="module")
def hardened(tmp_path_factory, mlp_state_dict):
    d = tmp_path_factory.mktemp("harden")
    (d / "audit.toml").write_text("[threats.membership-inference]\nn_reference = 4\n")
    r = mlwarden("harden", "--defense", "dp-sgd", "--param", "epsilon=2", "--model", mlp_state_dict, "--factory",
                 "mlwarden.core.zoo:mlp", "--recipe", "mlp", "--data", "digits", "--config", d / "audit.toml",
                 "--param", "lr=0.01", "--param", "batch_size=128", "--param", "epochs=20", "--out", d / "out")
    return r, d / "out"


def test_harden_writes_before_after_with_accountant_and_empirical_epsilon(hardened):
    r, out = hardened
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads((out / "harden.json").read_text())
    assert s["schema"] == "mlwarden.harden/2" and [d["name"] for d in s["defenses"]] == ["dp-sgd"]
    point = s["points"][0]
    dp = point["facts"]["dp-sgd"]
    assert dp["epsilon_spent"] == pytest.approx(2.0, abs=0.05) and dp["accountant"] == "prv"
    assert dp["noise_multiplier"] > 1 and dp["steps"] > 0 and 0 < dp["sample_rate"] < 1
    ora = point["evaluation"]["dp-sgd"]["one_run_audit"]
    assert ora["before"]["epsilon_lower_bound"] > 1.0  # the plain pipeline is certified not (1, delta)-DP
    assert ora["after"]["epsilon_lower_bound"] <= dp["epsilon_spent"] and not point["pipeline_bug"]
    assert point["accuracy"]["value"] > 0.6 and s["before"]["accuracy"]["value"] > point["accuracy"]["value"]
    assert point["accuracy_change"]["ci_high"] < 0          # DP cost accuracy, and the interval says so
    mia = next(c for c in point["comparison"] if c["threat"] == "membership-inference")
    assert mia["before"]["chance"] == 0.01 and mia["after"]["metric"] == mia["before"]["metric"]
    assert mia["after"]["ci_high"] < mia["before"]["ci_low"]  # the strongest attack lost ground
    assert mia["better"] and not mia["worse"] and s["worse"] == []
    assert s["verdict"].startswith("Risk: membership-inference") and "Cost: accuracy" in s["verdict"]
    for name in ("harden.md", "harden.html", "harden.sarif", "before/report.json", "after/report.json",
                 "after/report.html", "plots/roc-before-after.png"):
        assert (out / name).exists(), name
    after = json.loads((out / "after/report.json").read_text())
    mia_after = next(f for f in after["findings"] if f["threat"] == "membership-inference")
    auc = next(m for m in mia_after["metrics"] if m["name"] == "lira-online AUC")["value"]
    assert abs(auc - 0.5) < 0.05
    assert "epsilon_spent" in r.stdout and "one-run audit" in r.stdout and "Risk:" in r.stdout


def test_hardened_model_loads_in_audit_and_serve(hardened, tmp_path):
    _, out = hardened
    model = out / "hardened" / "model.pt2"
    r = mlwarden("audit", "--model", model, "--data", "digits", "--threats", "unsafe-model-file,fgsm",
                 "--out", tmp_path / "a")
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads((tmp_path / "a" / "report.json").read_text())
    fgsm = next(f for f in rep["findings"] if f["threat"] == "fgsm")
    clean = next(m for m in fgsm["metrics"] if m["name"] == "clean_accuracy")["value"]
    s = json.loads((out / "harden.json").read_text())
    assert clean == pytest.approx(s["points"][0]["accuracy"]["value"], abs=0.1)  # the same model, 200 points
    assert rep["findings"][0]["severity"] == "info"                             # a safe file
    from mlwarden.io.datasets import load_builtin
    x = load_builtin("digits").x_test[:5]
    with served(model) as url:
        res = httpx.post(f"{url}/v2/models/model/infer", json=infer_body(x))
        assert res.status_code == 200 and len(res.json()["outputs"][0]["data"]) == 50


def test_harden_html_shows_the_verdict_and_the_plots_in_chromium(hardened, tmp_path):
    """Rendered by a real browser: the verdict box sits at the top and the embedded plot decodes."""
    import numpy as np
    _, out = hardened
    img = screenshot(out / "harden.html", tmp_path / "harden.png")
    verdict_rows = np.where((np.abs(img - [240, 247, 255]).sum(-1) <= 3).sum(1) > 500)[0]
    assert len(verdict_rows) > 20 and verdict_rows.min() < 250     # the verdict box, near the top
    below = img[verdict_rows.max() + 1:]
    colored = (np.abs(below - below.mean(-1, keepdims=True)).sum(-1) > 60).sum()
    assert colored > 2000                                            # the ROC plot's coloured curves
    html = (out / "harden.html").read_text()
    assert "class='verdict'>Risk: membership-inference" in html and "data:image/png;base64," in html
    # the verdict box states the guarantee: the accountant's epsilon beside the one-run audit's lower bound
    s = json.loads((out / "harden.json").read_text())
    point = s["points"][0]
    spent = point["facts"]["dp-sgd"]["epsilon_spent"]
    bound = point["evaluation"]["dp-sgd"]["one_run_audit"]["after"]["epsilon_lower_bound"]
    said = f"Guarantee: dp-sgd: ({spent:.3g}, "
    assert said in s["verdict"] and f"lower bound on epsilon is {bound:.3g}" in s["verdict"], s["verdict"]
    assert said in html.split("class='verdict'>")[1].split("</p>")[0]


def test_resume_reuses_the_audits_and_the_saved_hardened_model(hardened, mlp_state_dict):
    r, out = hardened
    first = json.loads((out / "harden.json").read_text())
    again = mlwarden("harden", "--defense", "dp-sgd", "--param", "epsilon=2", "--model", mlp_state_dict,
                     "--factory", "mlwarden.core.zoo:mlp", "--recipe", "mlp", "--data", "digits", "--config",
                     out.parent / "audit.toml", "--param", "lr=0.01", "--param", "batch_size=128", "--param",
                     "epochs=20", "--out", out, "--resume")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "reusing the hardened model" in again.stderr and again.stderr.count("cached") >= 2
    second = json.loads((out / "harden.json").read_text())
    assert second["points"][0]["accuracy"] == first["points"][0]["accuracy"]
    assert second["points"][0]["facts"] == first["points"][0]["facts"]


def test_sweep_traces_a_tradeoff_curve(tmp_path, mlp_state_dict):
    (tmp_path / "audit.toml").write_text("[threats.membership-inference]\nn_reference = 2\n")
    r = mlwarden("harden", "--defense", "dp-sgd", "--param", "epsilon=1,8", "--model", mlp_state_dict,
                 "--factory", "mlwarden.core.zoo:mlp", "--recipe", "mlp", "--data", "digits", "--config",
                 tmp_path / "audit.toml", "--threats", "membership-inference", "--param", "epochs=10",
                 "--param", "one_run_canaries=100", "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads((tmp_path / "out" / "harden.json").read_text())
    assert [p["label"] for p in s["points"]] == ["after-epsilon=1", "after-epsilon=8"]
    eps = [p["facts"]["dp-sgd"]["epsilon_spent"] for p in s["points"]]
    assert eps[0] == pytest.approx(1, abs=0.05) and eps[1] == pytest.approx(8, abs=0.2)
    acc = [p["accuracy"]["value"] for p in s["points"]]
    assert acc[1] > acc[0]                                  # more privacy budget, more accuracy
    assert "plots/tradeoff.png" in s["plots"] and (tmp_path / "out" / "plots" / "tradeoff.png").exists()
    for label in ("model-epsilon=1.pt2", "model-epsilon=8.pt2"):
        assert (tmp_path / "out" / "hardened" / label).exists()


BAD = {
    "unknown defence": (["--defense", "magic"], "unknown defence 'magic'"),
    "negative epsilon": (["--defense", "dp-sgd", "--param", "epsilon=-1", "--recipe", "mlp"],
                         "epsilon: Input should be greater than 0"),
    "unknown parameter": (["--defense", "dp-sgd", "--param", "epsilom=1"], "has a parameter 'epsilom'"),
    "malformed parameter": (["--defense", "dp-sgd", "--param", "epsilon"], "must look like key=value"),
    "non-numeric sweep": (["--defense", "dp-sgd", "--param", "accountant=prv,rdp"], "only numbers can be swept"),
    "two sweeps": (["--defense", "dp-sgd", "--param", "epsilon=1,2", "--param", "lr=0.1,0.2"],
                   "only one parameter may take several values"),
    "delta too large": (["--defense", "dp-sgd", "--param", "delta=0.01", "--model", "{sd}", "--factory",
                         "mlwarden.core.zoo:mlp", "--recipe", "mlp", "--data", "digits"], "--delta 0.01 must be in (0, 1/n)"),
    "model without recipe": (["--defense", "dp-sgd", "--model", "{sd}", "--factory", "mlwarden.core.zoo:mlp",
                              "--data", "digits"], "give its training recipe"),
    "unknown recipe": (["--defense", "dp-sgd", "--recipe", "nosuch"], "recipe 'nosuch' must look like"),
    "bad accountant": (["--defense", "dp-sgd", "--param", "accountant=gdp"], "accountant: Input should be"),
    "missing corpus": (["--defense", "dp-sgd", "--model", "{sd}", "--factory", "mlwarden.core.zoo:charlm",
                        "--recipe", "charlm", "--data", "{tmp}/none.txt"], "text corpus not found"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_harden_bad_input_is_one_line_exit_2(case, tmp_path, mlp_state_dict):
    args, expected = BAD[case]
    args = [a.format(sd=mlp_state_dict, tmp=tmp_path) for a in args]
    r = mlwarden("harden", *args, "--out", tmp_path / "out")
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]
    assert not (tmp_path / "out" / "harden.json").exists()


def test_text_demo_audit_extracts_a_canary(tmp_path):
    r = mlwarden("audit", "--data", "stdlib-docstrings", "--threats", "secret-sharer", "--out", tmp_path / "t")
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads((tmp_path / "t" / "report.json").read_text())
    f = rep["findings"][0]
    assert f["threat"] == "secret-sharer" and f["severity"] == "critical"
    assert "secret extracted" in f["headline"]
    assert (tmp_path / "t" / f["evidence"][0]).exists()
