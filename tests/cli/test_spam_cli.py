"""The spam-poisoning audit and RONI from the command line, as a user runs them: `--data sms-spam` (filled
from ../shared into the cache, as a machine without the internet must), the built-in filter, a user's
scikit-learn pipeline as .skops, and `mlwarden harden --defense roni`."""
import json

import pytest

from ..conftest import place_sms_spam
from .run import mlwarden, screenshot

pytestmark = pytest.mark.slow


@pytest.fixture
def cache(tmp_path, monkeypatch):
    place_sms_spam(tmp_path / "cache")
    monkeypatch.setenv("MLWARDEN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _config(tmp_path, extra=""):
    cfg = tmp_path / "spam.toml"
    cfg.write_text('[data]\npath = "sms-spam"\ntest_fraction = 0.3\n' + extra)
    return cfg


def test_audit_of_the_built_in_filter_on_sms_spam(cache, tmp_path):
    out = tmp_path / "run"
    r = mlwarden("audit", "--config", _config(tmp_path), "--threats", "model-corruption", "--out", out,
                 "--fail-on", "high")
    assert r.returncode == 1, r.stderr[-2000:]            # critical findings, at or above --fail-on
    rep = json.loads((out / "report.json").read_text())
    by = {f["threat"]: f for f in rep["findings"]}
    assert by["unsafe-model-file"]["status"] == "skipped"  # no model file: the built-in filter
    d = by["spam-dictionary"]
    assert d["severity"] == "critical" and "flags legitimate mail" in d["details"]["failure_mode"]
    head = next(m for m in d["metrics"] if m["name"] == d["details"]["headline_metric"])
    assert head["value"] >= 0.9 and head["n"] == 1449
    assert by["spam-focused"]["severity"] in ("critical", "high")
    assert "mlwarden harden --defense roni --data sms-spam" in d["remedy"]["command"]
    md = (out / "report.md").read_text()
    assert "realistic" in md and "evidence/spam-dictionary/dictionary-attack.png" in md
    img = screenshot(out / "report.html", tmp_path / "spam.png")
    assert (abs(img - img.mean(-1, keepdims=True)).sum(-1) > 60).sum() > 2000   # the coloured curves render


def test_a_users_multinomial_nb_pipeline_fails_the_other_way(cache, tmp_path, sms_spam):
    import skops.io as sio
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.naive_bayes import MultinomialNB
    from sklearn.pipeline import make_pipeline

    from mlwarden.text.messages import decode
    pipe = make_pipeline(CountVectorizer(), MultinomialNB()).fit(decode(sms_spam.x_train), sms_spam.y_train.numpy())
    sio.dump(pipe, tmp_path / "nb.skops")
    out = tmp_path / "run"
    cfg = _config(tmp_path, '[threats.spam-dictionary]\ncontrols = [0.01]\ndictionaries = ["optimal"]\n')
    r = mlwarden("audit", "--config", cfg, "--model", tmp_path / "nb.skops", "--threats", "spam-dictionary",
                 "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    f = json.loads((out / "report.json").read_text())["findings"]
    d = next(f_ for f_ in f if f_["threat"] == "spam-dictionary")
    assert "lets spam through" in d["details"]["failure_mode"]
    assert "MultinomialNB" in d["details"]["notes"][0]
    assert d["severity"] == "critical"


def test_harden_with_roni(cache, tmp_path):
    out = tmp_path / "h"
    cfg = _config(tmp_path, '[threats.spam-dictionary]\ncontrols = [0.01]\n'
                            '[threats.spam-focused]\nknown_fractions = [0.5]\ntargets = 20\n')
    r = mlwarden("harden", "--config", cfg, "--defense", "roni", "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    h = json.loads((out / "harden.json").read_text())
    point = h["points"][0]
    rows = {c["threat"]: c for c in point["comparison"]}
    dic = rows["spam-dictionary"]
    assert dic["before"]["metric"] == "strongest attack at 1% control: test ham marked spam or unsure"
    assert dic["before"]["value"] >= 0.9 and dic["after"]["ci_high"] < dic["before"]["ci_low"]
    assert dic["severity"][0] == "critical" and dic["severity"][1] != "critical"
    ev = point["evaluation"]["roni"]
    assert ev["rejected"]["value"] <= 0.05 and (out / ev["rejected_file"]).exists()
    assert ev["unreliable"] is False, ev["summary"]   # the bayesian filter learns from single messages
    after = json.loads((out / "after" / "report.json").read_text())
    d = next(f for f in after["findings"] if f["threat"] == "spam-dictionary")
    whole = [m for m in d["metrics"] if m["name"].endswith("dictionary, 1% control: attack messages removed by the "
                                                           "sanitizer")]
    assert len(whole) == 2 and all(m["value"] >= 0.95 for m in whole)   # Nelson et al.'s attack mail: stopped
    # the attack adapted to RONI (smaller messages) slips mail past it and is what the verdict reports
    assert "words per message" in d["details"]["strongest"]
    adapted = next(m for m in d["metrics"] if m["name"] == d["details"]["headline_metric"])
    clean = next(m for m in d["metrics"] if m["name"] == "clean: test ham marked spam or unsure")
    assert adapted["ci_low"] > clean["ci_high"]
    assert "RONI" not in h["verdict"] and "spam-dictionary" in h["verdict"]
