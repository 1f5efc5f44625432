"""`mlwarden serve` as a process, and `mlwarden audit --endpoint` against it: the extraction threats run
against the served configuration, so the guards' effect on the cost of a copy shows in the report."""
import json

import pytest

from .run import mlwarden, start_serve, stop


@pytest.fixture()
def served(tmp_path_factory, digits):
    """Starts `mlwarden serve` on a logistic regression; yields (url, tmp) and stops it."""
    import torch

    from mlwarden.core.recipe import BUILTIN_RECIPES
    d = tmp_path_factory.mktemp("srv")
    model = BUILTIN_RECIPES["logreg"].fit(digits.x_train, digits.y_train, 10, seed=0)
    torch.save(model.state_dict(), d / "lr.pt")
    procs = []

    def start(*guards):
        p, base = start_serve(d / "lr.pt", "--factory", "mlwarden.core.zoo:logreg", "--data", "digits", "--name",
                              "lr", *guards)
        procs.append(p)
        return f"{base}/v2/models/lr"

    yield start, d
    for p in procs:
        stop(p)


def test_audit_endpoint_shows_what_each_guard_costs_the_thief(served, tmp_path):
    start, d = served
    cfg = d / "audit.toml"  # smaller agreement samples and copies: this test is about the guards' effect
    cfg.write_text("[threats.extract-equation-solving]\nn_uniform = 2000\n"
                   "[threats.extract-retraining]\nn_uniform = 2000\nepochs = 60\n")
    rows = {}
    for label, guards in (("exact", []), ("rounded", ["--output", "rounded", "--decimals", "2"]),
                          ("label", ["--output", "label"])):
        url = start(*guards)
        out = tmp_path / label
        r = mlwarden("audit", "--endpoint", url, "--data", "digits", "--threats",
                     "extract-equation-solving,extract-retraining", "--config", cfg, "--out", out)
        assert r.returncode == 0, r.stderr[-2000:]
        rep = json.loads((out / "report.json").read_text())
        assert rep["subject"]["model"]["kind"] == "http"
        rows[label] = {f["threat"]: f for f in rep["findings"]}
    eq = "extract-equation-solving"
    assert rows["exact"][eq]["queries"] == 65 and rows["exact"][eq]["severity"] == "critical"
    assert "loss minimisation" in rows["rounded"][eq]["headline"] and rows["rounded"][eq]["queries"] == 650
    assert rows["label"][eq]["status"] == "skipped"  # labels only: equation solving is impossible
    ret = rows["label"]["extract-retraining"]
    test_agreement = next(m for m in ret["metrics"] if m["name"].startswith("agreement on test"))["value"]
    assert test_agreement < 0.99  # 650 labels buy far less than 65 exact scores


def test_serve_bad_options_are_one_line_exit_2(tmp_path):
    for args, words in ((["--output", "everything"], "output"), (["--name", "a/b"], "--name"),
                        (["--rate", "-1"], "rate_per_s")):
        r = mlwarden("serve", "--data", "digits", *args)
        lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
        assert r.returncode == 2 and len(lines) == 1 and words in lines[0], r.stderr
