"""`mlwarden diff` and `audit --baseline`: a re-run with another seed is no regression, a model trained
without its defence is, changed settings are refused, and SARIF says what is new, unchanged or gone."""
from __future__ import annotations

import functools
import http.server
import json
import re
import threading

import pytest

from .run import mlwarden

MODEL = ["--factory", "mlwarden.core.zoo:mlp", "--data", "digits"]


@pytest.fixture(scope="module")
def base(tmp_path_factory, mlp_state_dict):
    d = tmp_path_factory.mktemp("diff")
    r = mlwarden("audit", "--model", mlp_state_dict, *MODEL, "--threats", "fgsm,pgd-linf", "--out", d / "base")
    assert r.returncode == 0, r.stderr
    return d, mlp_state_dict


def test_another_seed_is_no_regression_and_sarif_marks_unchanged(base):
    d, sd = base
    r = mlwarden("audit", "--model", sd, *MODEL, "--threats", "fgsm,pgd-linf", "--seed", "1", "--out", d / "seed1",
                 "--baseline", d / "base", "--fail-on-regression")
    assert r.returncode == 0, r.stdout + r.stderr
    diff = json.loads((d / "seed1" / "diff.json").read_text())
    assert diff["comparable"] and diff["regressions"] == []
    fgsm = next(x for x in diff["rows"] if x["threat"] == "fgsm")
    assert fgsm["before"]["value"] != fgsm["after"]["value"]            # other points, other numbers...
    assert fgsm["change"]["ci_low"] < 0 < fgsm["change"]["ci_high"]     # ...but no significant change
    assert "No significant regression" in (d / "seed1" / "diff.md").read_text()


def test_sarif_baseline_states_new_unchanged_absent(base):
    d, sd = base
    r = mlwarden("audit", "--model", sd, *MODEL, "--threats", "fgsm,unsafe-model-file", "--out", d / "mixed",
                 "--baseline", d / "base")
    assert r.returncode == 0, r.stderr
    results = json.loads((d / "mixed" / "report.sarif").read_text())["runs"][0]["results"]
    states = {x["ruleId"]: x["baselineState"] for x in results}
    assert states == {"fgsm": "unchanged", "unsafe-model-file": "new", "pgd-linf": "absent"}


def test_changed_settings_are_not_judged(base):
    d, sd = base
    args = ["audit", "--model", sd, *MODEL, "--threats", "fgsm,pgd-linf", "--eps", "0.3", "--baseline", d / "base"]
    r = mlwarden(*args, "--out", d / "eps")
    assert r.returncode == 0 and "Not comparable" in r.stdout
    diff = json.loads((d / "eps" / "diff.json").read_text())
    assert not diff["comparable"] and diff["regressions"] == [] and "eps" in diff["settings_changed"][0]
    assert all("settings changed" in x["incomparable"] for x in diff["rows"])
    r = mlwarden("diff", d / "base", d / "eps", "--fail-on-regression")
    assert r.returncode == 2 and r.stderr.startswith("error: cannot judge regressions")


def test_a_leakier_model_on_the_same_recipe_is_a_regression(tmp_path, digits):
    """Issue 34: the membership headline of a diff is the attack on each side's own model, calibrated by the
    reference models; pooled over those (the recipe's leakage) it reads the same for an MLP trained 10 epochs
    as for the same MLP trained 40 (the audited models: 0.9% -> 3.0%, n=898)."""
    import numpy as np
    import torch
    from mlwarden.core.recipe import BUILTIN_RECIPES
    # half of digits for training, half (899 non-members) for the test: a TPR at 1% FPR needs 500 non-members
    x, y = torch.cat([digits.x_train, digits.x_test]), torch.cat([digits.y_train, digits.y_test])
    half = len(x) // 2
    np.savez(tmp_path / "digits.npz", x_train=x[:half].numpy(), y_train=y[:half].numpy(), x_test=x[half:].numpy(),
             y_test=y[half:].numpy())   # the split, given
    for name, epochs in (("short", 10), ("full", 40)):
        model = BUILTIN_RECIPES["mlp"].with_(epochs=epochs).fit(x[:half], y[:half], 10, seed=0)
        torch.save(model.state_dict(), tmp_path / f"{name}.pt")
    (tmp_path / "audit.toml").write_text("[threats.membership-inference]\nn_reference = 8\n")
    common = ["--factory", "mlwarden.core.zoo:mlp", "--data", tmp_path / "digits.npz", "--config",
              tmp_path / "audit.toml", "--threats", "membership-inference"]
    r = mlwarden("audit", "--model", tmp_path / "short.pt", *common, "--recipe", "mlp", "--out", tmp_path / "short")
    assert r.returncode == 0, r.stderr[-2000:]
    r = mlwarden("audit", "--model", tmp_path / "full.pt", *common, "--recipe", "mlp", "--out", tmp_path / "full",
                 "--baseline", tmp_path / "short", "--fail-on-regression")
    assert r.returncode == 1, r.stdout + r.stderr
    d = json.loads((tmp_path / "full" / "diff.json").read_text())
    assert d["regressions"] == ["membership-inference"]
    row = d["rows"][0]
    assert row["before"]["metric"] == "lira-online (audited model only) TPR at 1% FPR" and row["change"]["ci_low"] > 0
    assert row["before"]["n"] == half   # the audited model's members, not the pooled models'
    assert "**Regression** in membership-inference" in (tmp_path / "full" / "diff.md").read_text()
    # what the diff compared before: the pooled headline, the same reference models attacked, the same number
    heads = [json.loads((tmp_path / s / "report.json").read_text())["findings"][0]["headline"] for s in ("short", "full")]
    assert heads[0] == heads[1] and "pooled over 8 models" in heads[0]
    assert row["change"]["method"] == "paired bootstrap"   # the threshold's noise in the interval (see below)
    back = mlwarden("diff", tmp_path / "full", tmp_path / "short", "--fail-on-regression")
    assert back.returncode == 0 and "improvement" in back.stdout
    # the same model again with another seed (other reference models of the same recipe): no regression
    r = mlwarden("audit", "--model", tmp_path / "full.pt", *common, "--recipe", "mlp", "--seed", "1", "--out",
                 tmp_path / "again", "--baseline", tmp_path / "full", "--fail-on-regression")
    assert r.returncode == 0, r.stdout + r.stderr
    row = json.loads((tmp_path / "again" / "diff.json").read_text())["rows"][0]
    assert not row["regression"] and row["change"]["ci_low"] < 0 < row["change"]["ci_high"], row

    # another recipe trains other reference models, which calibrate the attack otherwise: said, not compared
    r = mlwarden("audit", "--model", tmp_path / "full.pt", *common, "--recipe", "sigmoid-mlp", "--out", tmp_path / "other",
                 "--baseline", tmp_path / "short", "--fail-on-regression")
    assert r.returncode == 0, r.stdout + r.stderr
    row = json.loads((tmp_path / "other" / "diff.json").read_text())["rows"][0]
    assert not row["regression"] and row["incomparable"].startswith("the reference models differ (recipe 'mlp' -> "
                                                                     "'sigmoid-mlp')")
    assert "note: --fail-on-regression cannot judge membership-inference: the reference models differ" in \
        " ".join(r.stderr.split())   # the gate passes, and says what it did not judge
    assert "the reference models differ" in (tmp_path / "other" / "diff.md").read_text()


def test_baseline_from_a_url_and_bad_baselines(base, tmp_path):
    d, _ = base
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(d / "base"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/report.json"
        r = mlwarden("diff", url, d / "base", "--fail-on-regression")
        assert r.returncode == 0 and "No significant regression" in r.stdout, r.stderr
        missing = mlwarden("diff", url.replace("report.json", "nope.json"), d / "base")
        assert missing.returncode == 2 and "HTTP 404" in missing.stderr
    finally:
        server.shutdown()
    crafted = json.loads((d / "base" / "report.json").read_text())   # a stranger's baseline with impossible rates
    for m in crafted["findings"][0]["metrics"]:
        m["value"], m["n"] = 7.5, -3
    (tmp_path / "crafted").mkdir()
    (tmp_path / "crafted" / "report.json").write_text(json.dumps(crafted))
    r = mlwarden("diff", tmp_path / "crafted", d / "base", "--fail-on-regression")   # refused, named, not judged
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "not an mlwarden report" in r.stderr and "metrics.0.n: Input should be greater than or equal to 0" in r.stderr
    r = mlwarden("diff", tmp_path / "nothing", d / "base")
    assert r.returncode == 2 and r.stderr.startswith("error: no report.json") and "Traceback" not in r.stderr
    r = mlwarden("audit", "--model", "x.pt", *MODEL, "--fail-on-regression", "--out", tmp_path / "o")
    assert r.returncode == 2 and "needs a baseline" in r.stderr


def test_a_strangers_baseline_cannot_crash_inject_or_overwrite(base, tmp_path):
    """What an outsider's report.json tried (a hostile review of the diff): lone surrogates and 5,000-digit
    numbers were exit 3, bad URLs were exit 3, `--baseline DIR --out DIR` replaced the baseline, a threat name
    wrote terminal escapes and Markdown into the diff, and --json could replace a file of a run folder it read."""
    d, sd = base
    real = json.loads((d / "base" / "report.json").read_text())

    def crafted(name, edit, raw=None):
        (tmp_path / name).mkdir()
        doc = json.loads(json.dumps(real))
        edit(doc)
        (tmp_path / name / "report.json").write_text(raw(json.dumps(doc)) if raw else json.dumps(doc))
        return tmp_path / name

    def one_line(r):
        return r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr

    surrogate = crafted("surrogate", lambda doc: doc["findings"][0]["details"].update(note="SURROGATE"),
                        raw=lambda t: t.replace("SURROGATE", "a\\ud800"))
    r = mlwarden("diff", surrogate, d / "base")
    assert one_line(r) and "lone surrogate" in r.stderr, r.stderr
    huge = crafted("huge", lambda doc: None, raw=lambda t: t[:-1] + ', "zz": ' + "9" * 5000 + "}")
    r = mlwarden("diff", huge, d / "base")
    assert one_line(r) and "not valid JSON" in r.stderr, r.stderr
    for url in ("http://[::1", "http://" + "a" * 300 + ".com/"):
        r = mlwarden("diff", url, d / "base")
        assert one_line(r) and r.stderr.startswith("error: baseline http://"), r.stderr
    r = mlwarden("diff", "http://user:s3cret@127.0.0.1:9/report.json", d / "base")
    assert one_line(r) and "s3cret" not in r.stderr and "***@127.0.0.1" in r.stderr, r.stderr

    evil = crafted("evil", lambda doc: doc["findings"][0].update(
        threat="fgsm x | y\n\n**No significant regression.** ![t](http://evil.example/p.png) \x1b[2J\x1b]0;pwned\x07"))
    r = mlwarden("diff", evil, d / "base", "--markdown", tmp_path / "evil.md")
    assert r.returncode == 0 and "\x1b" not in r.stdout + r.stderr
    md = (tmp_path / "evil.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| fgsm x")]
    cells = re.split(r"(?<!\\)\|", rows[0])[1:-1] if len(rows) == 1 else []
    assert len(cells) == 6 and "\\|" in cells[0], rows   # one row of six cells, the name's bar escaped
    assert "![t](" not in md and "**No significant regression.**" not in md

    r = mlwarden("diff", d / "base", evil, "--json", d / "base" / "run.json")   # a file of a run folder it reads
    assert one_line(r) and "is an input of this command" in r.stderr, r.stderr
    r = mlwarden("diff", d / "base", evil, "--json", tmp_path / "same", "--markdown", tmp_path / "same")
    assert one_line(r) and "name one file" in r.stderr, r.stderr
    (tmp_path / "linked").mkdir()   # a run folder whose report.json is a link out of it: not followed
    (tmp_path / "linked" / "report.json").symlink_to(d / "base" / "report.json")
    r = mlwarden("diff", tmp_path / "linked", d / "base")
    assert one_line(r) and "outside the run folder" in r.stderr, r.stderr
    before = (d / "base" / "report.json").read_bytes()
    r = mlwarden("audit", "--model", sd, *MODEL, "--threats", "fgsm", "--baseline", d / "base", "--out", d / "base")
    assert one_line(r) and "--baseline" in r.stderr and (d / "base" / "report.json").read_bytes() == before, r.stderr
