"""`mlwarden audit --federated` and `mlwarden harden --federated` end to end, as a user runs them."""
from __future__ import annotations

import json

import pytest

from .run import mlwarden

pytestmark = pytest.mark.slow


def test_federated_demo_audit(tmp_path):
    out = tmp_path / "fed"
    r = mlwarden("audit", "--federated", "--out", out, "--fail-on", "high")
    assert r.returncode == 1, r.stderr[-2000:]          # FedAvg: sign flipping and model replacement are critical
    report = json.loads((out / "report.json").read_text())
    found = {f["threat"]: f for f in report["findings"]}
    assert set(found) == {"sign-flipping", "client-label-flipping", "a-little-is-enough",
                          "inner-product-manipulation", "fang-tailored", "model-replacement",
                          "idlg", "dlg", "analytic-fc", "inverting-gradients", "robbing-the-fed"}
    assert found["sign-flipping"]["severity"] == "critical"
    assert found["model-replacement"]["severity"] == "critical"
    assert all(f["status"] == "ok" for n, f in found.items() if n != "robbing-the-fed")
    assert found["robbing-the-fed"]["status"] == "skipped"   # the softmax regression has one layer to imprint
    fix = found["sign-flipping"]["remedy"]["command"]
    assert "--federated" in fix and "--defense trimmed-mean" in fix
    assert (out / found["sign-flipping"]["evidence"][0]).is_file()


def test_harden_compares_aggregation_rules(tmp_path):
    out = tmp_path / "h"
    r = mlwarden("harden", "--federated", "--partition", "dirichlet", "--defense", "krum,median,trimmed-mean",
                 "--threats", "sign-flipping", "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((out / "harden.json").read_text())
    assert [p["label"] for p in summary["points"]] == ["after-krum", "after-median", "after-trimmed-mean"]
    before = None
    for p in summary["points"]:
        c = p["comparison"][0]
        before = c["before"]["value"]
        assert c["after"]["value"] > before + 0.3, (p["label"], c)      # the attack no longer collapses the model
        per_client = p["evaluation"][p["label"].removeprefix("after-")]["per_client"]
        assert len(per_client) == 6 and sum(c["n"] for c in per_client) == 1347
    assert before < 0.3
    assert "per client with no attacker" in r.stdout
