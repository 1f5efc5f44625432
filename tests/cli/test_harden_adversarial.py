"""`mlwarden harden --defense adversarial-training`, end to end on a real digits MLP, started the way a user
would start it: by running the exact command the audit's evasion finding recommends."""
import json
import shlex

import httpx
import pytest
import torch

from .run import infer_body, mlwarden, screenshot, served

pytestmark = pytest.mark.slow   # end-to-end runs through the CLI


@pytest.fixture(scope="module")
def run(tmp_path_factory, mlp_state_dict):
    d = tmp_path_factory.mktemp("at")
    a = mlwarden("audit", "--model", mlp_state_dict, "--factory", "mlwarden.core.zoo:mlp", "--recipe", "mlp",
                 "--data", "digits", "--threats", "whitebox-cascade", "--out", d / "audit")
    assert a.returncode == 0, a.stderr[-2000:]
    finding = json.loads((d / "audit" / "report.json").read_text())["findings"][0]
    command = finding["remedy"]["command"]
    args = shlex.split(command)
    r = mlwarden(*args[1:], "--out", d / "harden")
    return command, r, d / "harden", mlp_state_dict


def test_the_evasion_findings_remedy_is_the_exact_command(run):
    command, r, out, sd = run
    assert command == ("mlwarden harden --defense adversarial-training --param eps=0.1 --param norm=linf "
                       f"--model {shlex.quote(str(sd))} --factory mlwarden.core.zoo:mlp --data digits --recipe mlp")
    assert r.returncode == 0, r.stderr[-3000:]


def test_before_after_shows_robustness_gained_against_accuracy_and_time(run):
    _, r, out, _ = run
    s = json.loads((out / "harden.json").read_text())
    p = s["points"][0]
    assert s["threats"] == ["whitebox-cascade", "hopskipjump"]
    rows = {c["threat"]: c for c in p["comparison"]}
    wb = rows["whitebox-cascade"]
    assert wb["status"] == ["ok", "ok"] and not p["unreliable"]         # no masking check fired after AT
    assert wb["after"]["ci_low"] > wb["before"]["ci_high"]              # robust accuracy rose, beyond noise
    assert wb["after"]["value"] >= 0.75
    assert p["accuracy"]["value"] >= 0.93
    facts = p["facts"]["adversarial-training"]
    assert facts["method"] == "pgd" and facts["eps"] == 0.1 and facts["training"]["epochs"] == 100
    ev = p["evaluation"]["adversarial-training"]
    assert ev["training_time_ratio"] > 1.5                               # AT costs training time, and says so
    assert "x plain training" in s["verdict"] and "Risk: whitebox-cascade" in s["verdict"]
    # the label-only attack ran at the defended budget, not at its own L2 default
    after = json.loads((out / "after" / "report.json").read_text())
    hsj = next(f for f in after["findings"] if f["threat"] == "hopskipjump")
    assert hsj["params"]["norm"] == "linf" and hsj["params"]["eps"] == 0.1
    assert (out / "plots" / "security-curve-before-after.png").exists()
    assert "training took" in r.stdout


def test_harden_html_overlays_the_security_curves(run, tmp_path):
    _, _, out, _ = run
    img = screenshot(out / "harden.html", tmp_path / "at.png")
    import numpy as np
    colored = (np.abs(img - img.mean(-1, keepdims=True)).sum(-1) > 60).sum()
    assert colored > 2000                                                 # the plot's coloured curves
    assert "alt='plots/security-curve-before-after.png' src='data:image/png;base64," in (out / "harden.html").read_text()


def test_the_hardened_model_is_audited_and_served_like_any_other(run, tmp_path):
    _, _, out, _ = run
    model = out / "hardened" / "model.pt2"
    a = mlwarden("audit", "--model", model, "--data", "digits", "--threats", "whitebox-cascade", "--out",
                 tmp_path / "a")
    assert a.returncode == 0, a.stderr[-2000:]
    again = json.loads((tmp_path / "a" / "report.json").read_text())["findings"][0]
    after = next(f for f in json.loads((out / "after" / "report.json").read_text())["findings"]
                 if f["threat"] == "whitebox-cascade")
    value = {m["name"]: m["value"] for m in again["metrics"]}
    assert value["robust_accuracy"] == pytest.approx({m["name"]: m["value"] for m in after["metrics"]}
                                                     ["robust_accuracy"])   # the same model, same seeds
    from mlwarden.io.datasets import load_builtin
    from mlwarden.io.models import load_target
    data = load_builtin("digits")
    x = data.x_test[:20]
    local = load_target(str(model), data).scores(x)
    with served(model) as url:
        res = httpx.post(f"{url}/v2/models/model/infer", json=infer_body(x))
    assert res.status_code == 200
    remote = torch.tensor(res.json()["outputs"][0]["data"]).view(20, 10)
    assert torch.allclose(remote, torch.as_tensor(local, dtype=torch.float32), atol=1e-5)


BAD = {
    "unknown method": (["--param", "method=free"], "method: Input should be 'pgd', 'trades' or 'fast'"),
    "eps covers the range": (["--param", "eps=1"], "covers the whole input range"),
    "trades with dp": (["--defense", "dp-sgd,adversarial-training", "--param", "method=trades"],
                       "cannot be combined with a defence that wraps training"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_adversarial_training_input_is_one_line_exit_2(case, tmp_path):
    args, expected = BAD[case]
    if "--defense" not in args:
        args = ["--defense", "adversarial-training", *args]
    r = mlwarden("harden", *args, "--out", tmp_path / "out")
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]
    assert not (tmp_path / "out" / "harden.json").exists()
