"""A user's own model through the CLI: every report format, --fail-on, re-rendering, resume after a kill."""
import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest

from .run import mlwarden

pytestmark = pytest.mark.slow   # end-to-end runs through the CLI

CONFIG = """
[model]
path = "{model}"
factory = "mlwarden.core.zoo:mlp"

[data]
path = "digits"

[audit]
threats = ["fgsm", "square", "hopskipjump"]

[threats.fgsm]
n_samples = 100
eps = 0.15

[threats.square]
n_samples = 60
max_queries = 300

[threats.hopskipjump]
n_samples = 30
max_iter = 5
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, mlp_state_dict):
    d = tmp_path_factory.mktemp("cli")
    (d / "audit.toml").write_text(CONFIG.format(model=mlp_state_dict))
    r = mlwarden("audit", "--config", d / "audit.toml", "--out", d / "run", "--fail-on", "high")
    return d, r


def test_audit_writes_every_format(run_dir):
    d, r = run_dir
    assert r.returncode == 1, r.stderr[-3000:]  # FGSM at eps 0.15 breaks an undefended MLP: high or worse
    out = d / "run"
    rep = json.loads((out / "report.json").read_text())
    assert rep["schema"] == "mlwarden.report/1"
    names = [f["threat"] for f in rep["findings"]]
    assert names == ["fgsm", "square", "hopskipjump"]
    fgsm = rep["findings"][0]
    robust = next(m for m in fgsm["metrics"] if m["name"] == "robust_accuracy")
    assert robust["n"] == 100 and robust["ci_low"] <= robust["value"] <= robust["ci_high"]
    assert robust["value"] < 0.6
    assert rep["subject"]["data"]["input_range"] == [0.0, 1.0]
    sq = rep["findings"][1]
    assert 0 < sq["queries"] <= 60 * 301
    sarif = json.loads((out / "report.sarif").read_text())
    assert sarif["version"] == "2.1.0" and len(sarif["runs"][0]["results"]) == 3
    suite = ET.parse(out / "junit.xml").getroot()
    assert suite.get("tests") == "3" and int(suite.get("failures")) >= 1
    html = (out / "report.html").read_text()
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org", "")
    assert "robust_accuracy" in html
    assert "# mlwarden audit" in (out / "report.md").read_text()
    assert "report:" in r.stdout and "fgsm" in r.stdout


def test_fail_on_critical_only(run_dir, mlp_state_dict, tmp_path):
    cfg = tmp_path / "small.toml"
    cfg.write_text(CONFIG.format(model=mlp_state_dict).replace("eps = 0.15", "eps = 0.01"))
    r = mlwarden("audit", "--config", cfg, "--out", tmp_path / "r", "--threats", "fgsm", "--fail-on", "critical")
    assert r.returncode == 0, r.stderr[-2000:]
    assert ET.parse(tmp_path / "r" / "junit.xml").getroot().get("failures") == "0"   # as the exit code says


def test_junit_failures_are_the_findings_the_exit_code_counts(run_dir, tmp_path):
    """The run that exits 1 under --fail-on high (FGSM at eps 0.15 on the MLP: high or worse) marks that finding
    a failure; the same audit with no --fail-on exits 0 and its junit.xml fails nothing, the severity and
    headline kept in the test case's output."""
    d, r = run_dir
    gated = ET.parse(d / "run" / "junit.xml").getroot()
    fgsm = next(c for c in gated.iter("testcase") if c.get("name") == "fgsm")
    assert r.returncode == 1 and fgsm.find("failure") is not None
    plain = mlwarden("audit", "--config", d / "audit.toml", "--out", tmp_path / "plain", "--threats", "fgsm")
    assert plain.returncode == 0, plain.stderr[-2000:]
    suite = ET.parse(tmp_path / "plain" / "junit.xml").getroot()
    case = next(c for c in suite.iter("testcase") if c.get("name") == "fgsm")
    assert suite.get("failures") == "0" and case.find("failure") is None
    assert case.find("system-out").text.split(":")[0] == json.loads(
        (tmp_path / "plain" / "report.json").read_text())["findings"][0]["severity"]


def test_report_rerenders_from_json(run_dir):
    d, _ = run_dir
    (d / "run" / "report.html").unlink()
    r = mlwarden("report", d / "run")
    assert r.returncode == 0, r.stderr
    assert "robust_accuracy" in (d / "run" / "report.html").read_text()


def test_resume_after_kill_reuses_finished_findings(tmp_path, mlp_state_dict):
    cfg = tmp_path / "audit.toml"
    cfg.write_text(CONFIG.format(model=mlp_state_dict).replace(
        'threats = ["fgsm", "square", "hopskipjump"]', 'threats = ["fgsm", "hopskipjump", "square"]').replace(
        "n_samples = 30\nmax_iter = 5", "n_samples = 100\nmax_iter = 60\nstop_at_eps = false"))   # long enough to kill
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "mlwarden", "audit", "--config", str(cfg), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    first = out / "findings" / "fgsm.json"
    deadline = time.time() + 120
    while not first.exists() and time.time() < deadline:
        assert proc.poll() is None, "the audit stopped before writing its first finding"
        time.sleep(0.2)
    assert first.exists(), "the first finding was never written"
    time.sleep(1.0)
    assert proc.poll() is None, "the audit finished before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = first.read_text()
    mtime = first.stat().st_mtime_ns
    assert not (out / "report.json").exists()
    assert json.loads(saved)["threat"] == "fgsm"  # whole, not half-written
    r = mlwarden("audit", "--config", cfg, "--out", out, "--resume", "--threats", "fgsm,hopskipjump,square")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "cached" in r.stderr
    assert first.stat().st_mtime_ns == mtime and first.read_text() == saved
    rep = json.loads((out / "report.json").read_text())
    assert [f["threat"] for f in rep["findings"]] == ["fgsm", "hopskipjump", "square"]


def test_resume_refuses_a_different_audit(tmp_path, run_dir):
    d, _ = run_dir
    r = mlwarden("audit", "--config", d / "audit.toml", "--out", d / "run", "--resume", "--seed", "7")
    assert r.returncode == 2 and "holds a different audit" in r.stderr


def test_a_threat_out_of_time_reads_timed_out_and_the_run_finishes(mlp_state_dict, tmp_path):
    """A threat that runs out of its time budget is a failed finding the terminal table, report.md and junit.xml
    show as 'timed out' (not a severity); without --fail-on the run exits 0 with its report written."""
    r = mlwarden("audit", "--model", mlp_state_dict, "--factory", "mlwarden.core.zoo:mlp", "--data", "digits",
                 "--threats", "pgd-linf", "--time-budget", "0.000001", "--out", tmp_path / "r")
    assert r.returncode == 0, r.stderr[-2000:]
    row = next(ln for ln in r.stdout.splitlines() if "pgd-linf" in ln)
    assert "timed out" in row and "failed" in row, r.stdout
    assert "| pgd-linf | failed | timed out |" in (tmp_path / "r" / "report.md").read_text()
    case = next(ET.parse(tmp_path / "r" / "junit.xml").getroot().iter("testcase"))
    assert case.find("error") is None and case.find("skipped") is not None   # no gate: nothing fails or errs
