"""`mlwarden audit --endpoint` against a real third-party server: MLServer 1.7 with its scikit-learn runtime, in
its own virtual environment (`make test` builds .venv-mlserver), serving a digits logistic regression
(multinomial, lbfgs) and a depth-4 iris tree that were trained and saved inside that environment, as its
users do. MLServer declares no input metadata and answers `predict` unless `predict_proba` is requested."""
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ..cli.run import mlwarden

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-mlserver"
pytestmark = pytest.mark.slow

BUILD = """
import joblib, json, sys
from sklearn.datasets import load_digits, load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier
d = load_digits()
joblib.dump(LogisticRegression(max_iter=3000).fit(d.data / 16.0, d.target), "digits-lr/model.joblib")
i = load_iris()
joblib.dump(DecisionTreeClassifier(max_depth=4, random_state=0).fit(i.data, i.target), "iris-tree/model.joblib")
for name in ("digits-lr", "iris-tree"):
    json.dump({"name": name, "implementation": "mlserver_sklearn.SKLearnModel",
               "parameters": {"uri": "./model.joblib"}}, open(f"{name}/model-settings.json", "w"))
ports = [int(p) for p in sys.argv[1:4]]
json.dump({"parallel_workers": 0, "http_port": ports[0], "grpc_port": ports[1], "metrics_port": ports[2]},
          open("settings.json", "w"))
"""


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture(scope="module")
def mlserver(tmp_path_factory):
    if not (VENV / "bin" / "mlserver").exists():   # `make test` builds it; a bare pytest run builds it here
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "mlserver==1.7.1", "mlserver-sklearn==1.7.1"],
                       check=True)
    d = tmp_path_factory.mktemp("mlserver")
    (d / "digits-lr").mkdir()
    (d / "iris-tree").mkdir()
    http, grpc, metrics = _free_ports(3)
    subprocess.run([str(VENV / "bin" / "python"), "-c", BUILD, str(http), str(grpc), str(metrics)], cwd=d, check=True)
    log = open(d / "mlserver.log", "w")
    p = subprocess.Popen([str(VENV / "bin" / "mlserver"), "start", "."], cwd=d, stdout=log, stderr=subprocess.STDOUT,
                         env={k: v for k, v in os.environ.items() if not k.startswith("VIRTUAL_ENV")})
    base = f"http://127.0.0.1:{http}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert p.poll() is None, (d / "mlserver.log").read_text()[-2000:]
            try:
                if all(httpx.get(f"{base}/v2/models/{m}/ready").status_code == 200 for m in ("digits-lr", "iris-tree")):
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "MLServer did not start"
            time.sleep(0.5)
        assert httpx.get(f"{base}/v2").json()["name"] == "mlserver"
        yield base
    finally:
        p.terminate()
        p.wait(20)
        log.close()


def _audit(tmp_path, *args):
    out = tmp_path / "run"
    r = mlwarden("audit", *args, "--out", out)
    assert r.returncode in (0, 1), r.stderr[-2000:]
    return {f["threat"]: f for f in json.loads((out / "report.json").read_text())["findings"]}


def test_equation_solving_square_and_hopskipjump_against_mlserver(mlserver, tmp_path):
    # the URL as users copy it, with its /infer suffix; digits sent as the 64 features the model was trained on
    f = _audit(tmp_path, "--endpoint", f"{mlserver}/v2/models/digits-lr/infer", "--data", "digits",
               "--input-shape", "64", "--endpoint-output", "predict_proba",
               "--threats", "extract-equation-solving,square,hopskipjump")
    eq = f["extract-equation-solving"]
    metrics = {m["name"]: m for m in eq["metrics"]}
    assert eq["status"] == "ok" and eq["queries"] == 65                       # d + 1
    agree = [m for name, m in metrics.items() if name.startswith("agreement on")]   # test and uniform inputs
    assert len(agree) == 2 and all(m["value"] >= 0.999 for m in agree), agree
    constant = metrics["agreement of a constant answer (the victim's most common test label)"]
    assert constant["value"] < 0.2 and eq["headline"].startswith("copied with 65 queries"), eq["headline"]
    for name in ("square", "hopskipjump"):
        assert f[name]["status"] == "ok" and f[name]["queries"] > 0, f[name]["headline"]


def test_path_finding_copies_the_iris_tree_served_by_mlserver(mlserver, tmp_path):
    f = _audit(tmp_path, "--endpoint", f"{mlserver}/v2/models/iris-tree", "--data", "iris",
               "--endpoint-output", "predict_proba", "--threats", "extract-path-finding")["extract-path-finding"]
    metrics = {m["name"]: m for m in f["metrics"]}
    test = next(m for name, m in metrics.items() if name.startswith("agreement on test"))
    assert f["status"] == "ok" and test["value"] == 1.0, f["headline"]
    assert f["details"]["complete"] and metrics["queries"]["value"] == f["queries"] < 20_000
    assert metrics["leaf regions"]["value"] <= 32           # a depth-4 tree has at most 16 leaves; no re-cuts


def test_what_the_audit_sent_and_what_does_not_apply(mlserver, tmp_path):
    f = _audit(tmp_path, "--endpoint", f"{mlserver}/v2/models/digits-lr", "--data", "digits", "--input-shape", "64",
               "--endpoint-output", "predict_proba", "--threats", "extract-path-finding")["extract-path-finding"]
    assert f["status"] == "skipped" and "not a decision tree" in f["headline"] and f["queries"] <= 64
    rep = json.loads((tmp_path / "run" / "report.json").read_text())
    sent = rep["subject"]["model"]["sent"]
    assert "digits" in sent and "[64]" in sent
    # without predict_proba, MLServer answers labels: the audit sees label-only access and says so
    f = _audit(tmp_path, "--endpoint", f"{mlserver}/v2/models/iris-tree", "--data", "iris",
               "--threats", "extract-equation-solving")["extract-equation-solving"]
    assert f["status"] == "skipped" and "labels" in f["headline"]
