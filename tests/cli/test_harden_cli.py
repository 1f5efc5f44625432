"""`mlwarden harden --defense dp-sgd` end to end on a real digits MLP, and its bad-input errors."""
import json

import pytest

from .run import mlwarden


@pytest.fixture(scope="module")
def hardened(tmp_path_factory, mlp_state_dict):
    d = tmp_path_factory.mktemp("harden")
    (d / "audit.toml").write_text("[threats.membership-inference]\nn_reference = 4\n")
    r = mlwarden("harden", "--defense", "dp-sgd", "--epsilon", "2", "--model", mlp_state_dict, "--factory",
                 "mlwarden.core.zoo:mlp", "--recipe", "mlp", "--data", "digits", "--config", d / "audit.toml",
                 "--lr", "0.01", "--batch-size", "128", "--epochs", "20", "--out", d / "out")
    return r, d / "out"


def test_harden_writes_before_after_with_accountant_and_empirical_epsilon(hardened):
    r, out = hardened
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads((out / "harden.json").read_text())
    p = s["privacy"]
    assert p["epsilon_spent"] == pytest.approx(2.0, abs=0.05) and p["accountant"] == "prv"
    assert p["noise_multiplier"] > 1 and p["steps"] > 0 and 0 < p["sample_rate"] < 1
    ora = p["one_run_audit"]
    assert ora["before"]["epsilon_lower_bound"] > 1.0  # the plain pipeline is certified not (1, delta)-DP
    assert ora["after"]["epsilon_lower_bound"] <= p["epsilon_spent"] and not p["pipeline_bug"]
    assert s["accuracy"]["after"] > 0.6 and s["accuracy"]["before"] > s["accuracy"]["after"]
    rows = {(x["threat"], x["metric"]): x for x in s["findings"]}
    assert ("membership-inference", "lira-online TPR at 1% FPR") in rows
    for name in ("harden.md", "harden.html", "before/report.json", "after/report.json", "after/report.html"):
        assert (out / name).exists(), name
    after = json.loads((out / "after/report.json").read_text())
    mia = next(f for f in after["findings"] if f["threat"] == "membership-inference")
    auc = next(m for m in mia["metrics"] if m["name"] == "lira-online AUC")["value"]
    assert abs(auc - 0.5) < 0.05
    assert "epsilon (accountant, prv)" in r.stdout and "Unit of privacy" in r.stdout


BAD = {
    "unknown defence": (["--defense", "magic"], "--defense 'magic' is not available"),
    "negative epsilon": (["--defense", "dp-sgd", "--epsilon", "-1", "--recipe", "mlp"], "--epsilon must be positive"),
    "delta too large": (["--defense", "dp-sgd", "--delta", "0.01", "--model", "{sd}", "--factory",
                         "mlwarden.core.zoo:mlp", "--recipe", "mlp", "--data", "digits"], "--delta 0.01 must be in (0, 1/n)"),
    "model without recipe": (["--defense", "dp-sgd", "--model", "{sd}", "--factory", "mlwarden.core.zoo:mlp",
                              "--data", "digits"], "give its training recipe"),
    "unknown recipe": (["--defense", "dp-sgd", "--recipe", "nosuch"], "recipe 'nosuch' must look like"),
    "bad accountant": (["--defense", "dp-sgd", "--accountant", "gdp"], "must be prv or rdp"),
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
