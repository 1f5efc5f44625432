"""No user data is ever lost: --out, --resume, default run names and report rendering never delete or
read what the tool did not create."""
from __future__ import annotations

import base64
import json
import shutil

import pytest
import torch

from .run import mlwarden

FAST = ["--threats", "unsafe-model-file,fgsm", "--factory", "mlwarden.core.zoo:mlp", "--data", "digits"]


@pytest.fixture(scope="module")
def model(mlp_state_dict):
    return mlp_state_dict


def audit(model, out, *extra, cwd=None):
    return mlwarden("audit", "--model", model, *FAST, *(["--out", out] if out else []), *extra, cwd=cwd)


def test_out_that_is_not_a_run_directory_is_refused(model, tmp_path):
    (tmp_path / "evidence").mkdir()
    (tmp_path / "evidence" / "thesis.tex").write_text("years of work")
    (tmp_path / "findings").mkdir()
    (tmp_path / "findings" / "notes.json").write_text("{}")
    r = audit(model, tmp_path)
    assert r.returncode == 2 and "not an mlwarden run directory" in r.stderr
    assert (tmp_path / "evidence" / "thesis.tex").read_text() == "years of work"
    assert (tmp_path / "findings" / "notes.json").exists() and not (tmp_path / "run.json").exists()
    assert audit(model, tmp_path / "evidence" / "thesis.tex").returncode == 2   # a file is no folder


def test_rerun_replaces_only_what_the_run_created(model, tmp_path):
    import hashlib
    out = tmp_path / "run"
    assert audit(model, out).returncode == 0, audit(model, out).stderr
    created = [c["path"] for c in json.loads((out / "run.json").read_text())["created"]]
    assert "findings/fgsm.json" in created and "report.html" in created
    (out / "evidence" / "fgsm").mkdir(parents=True, exist_ok=True)
    (out / "evidence" / "fgsm" / "my-notes.txt").write_text("mine")
    (out / "findings" / "mine.json").write_text("{}")
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    digest = hashlib.sha256(b"keep").hexdigest()
    state = json.loads((out / "run.json").read_text())
    state["created"] += [{"path": "../outside.txt", "sha256": digest}, {"path": str(outside), "sha256": digest},
                         {"path": "findings/mine.json", "sha256": "0" * 64}, "evidence", 5]   # a lying run.json
    (out / "run.json").write_text(json.dumps(state))
    r = audit(model, out)
    assert r.returncode == 0, r.stderr
    assert (out / "evidence" / "fgsm" / "my-notes.txt").read_text() == "mine"
    assert (out / "findings" / "mine.json").exists() and outside.read_text() == "keep"
    assert json.loads((out / "report.json").read_text())["findings"][1]["threat"] == "fgsm"


def test_links_and_lookalike_run_json_are_refused(model, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    out = tmp_path / "run"
    assert audit(model, out).returncode == 0
    import shutil as sh
    sh.rmtree(out / "findings")
    (out / "findings").symlink_to(victim)                      # a link inside a real run directory
    r = audit(model, out)
    assert r.returncode == 2 and "does not write through links" in r.stderr
    assert list(victim.iterdir()) == []
    legacy = tmp_path / "legacy"          # an old-style run.json is a run directory, but lists nothing to delete
    legacy.mkdir()
    (legacy / "keep.txt").write_text("keep")
    import hashlib
    (legacy / "run.json").write_text(json.dumps({"fingerprint": "f", "settings": {}, "subject": {}, "threats": [],
                                                 "created": [{"path": "keep.txt",
                                                              "sha256": hashlib.sha256(b"keep").hexdigest()}]}))
    assert audit(model, legacy).returncode == 0 and (legacy / "keep.txt").read_text() == "keep"
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "run.json").write_text(json.dumps({"fingerprint": "abc", "created": "ab"}))  # not mlwarden's
    (mine / "a").write_text("1")
    r = audit(model, mine)
    assert r.returncode == 2 and "not an mlwarden run directory" in r.stderr
    assert (mine / "a").exists() and json.loads((mine / "run.json").read_text())["created"] == "ab"


def test_resume_without_run_json_refuses(model, tmp_path):
    (tmp_path / "empty").mkdir()
    r = audit(model, tmp_path / "empty", "--resume")
    assert r.returncode == 2 and "holds no mlwarden run" in r.stderr
    assert list((tmp_path / "empty").iterdir()) == []


def test_resume_reruns_corrupt_and_misfiled_findings_by_name(model, tmp_path):
    out = tmp_path / "run"
    assert audit(model, out).returncode == 0
    good = json.loads((out / "findings" / "fgsm.json").read_text())
    (out / "findings" / "fgsm.json").write_text("")                                   # empty
    (out / "findings" / "unsafe-model-file.json").write_text(json.dumps(good))        # wrong threat
    r = audit(model, out, "--resume")
    assert r.returncode == 0, r.stderr
    assert "fgsm.json: is not readable JSON" in r.stderr and "holds a finding of 'fgsm'" in r.stderr
    rep = json.loads((out / "report.json").read_text())
    assert [f["threat"] for f in rep["findings"]] == ["unsafe-model-file", "fgsm"]
    assert json.loads((out / "findings" / "unsafe-model-file.json").read_text())["threat"] == "unsafe-model-file"


def test_resume_fingerprint_ignores_path_spelling_and_fail_on(model, tmp_path):
    shutil.copy(model, tmp_path / "m.pt")
    assert audit("./m.pt", "./runs/r1", "--fail-on", "critical", cwd=tmp_path).returncode == 0
    r = audit("m.pt", "runs/r1/", "--resume", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("cached") == 2


def test_resume_notices_a_retrained_model_at_the_same_path(model, tmp_path, digits):
    shutil.copy(model, tmp_path / "m.pt")
    assert audit(tmp_path / "m.pt", tmp_path / "r").returncode == 0
    sd = torch.load(tmp_path / "m.pt", weights_only=True)
    first = next(iter(sd))
    sd[first] = sd[first] + 0.01
    torch.save(sd, tmp_path / "m.pt")
    r = audit(tmp_path / "m.pt", tmp_path / "r", "--resume")
    assert r.returncode == 2 and "holds a different audit" in r.stderr


def test_default_run_name_from_a_dotted_model_name_stays_in_mlwarden_out(tmp_path, digits, digits_mlp):
    ep = torch.export.export(digits_mlp, (digits.x_test[:4],),
                             dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}})
    torch.export.save(ep, tmp_path / "m.pt2")
    (tmp_path / "m.pt2").rename(tmp_path / "...pt2")
    for d in ("evidence", "findings"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "keep.txt").write_text("x")
    r = mlwarden("audit", "--model", "...pt2", "--data", "digits", "--threats", "unsafe-model-file", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "mlwarden-out" / "model" / "report.json").exists()
    assert (tmp_path / "evidence" / "keep.txt").exists() and (tmp_path / "findings" / "keep.txt").exists()
    assert not (tmp_path / "report.json").exists() and not (tmp_path / "run.json").exists()


def test_report_embeds_evidence_only_from_inside_the_run(model, tmp_path):
    out = tmp_path / "run"
    assert audit(model, out).returncode == 0
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG\r\n\x1a\nSECRET-BYTES")
    (out / "link.png").symlink_to(secret)
    rep = json.loads((out / "report.json").read_text())
    rep["findings"][1]["evidence"] += ["../secret.png", str(secret), "link.png"]
    (out / "report.json").write_text(json.dumps(rep))
    r = mlwarden("report", out)
    assert r.returncode == 0, r.stderr
    html = (out / "report.html").read_text()
    assert base64.b64encode(secret.read_bytes()).decode()[:16] not in html
    assert "../secret.png" in html        # listed by name, not embedded
