"""No user data is ever lost: --out, --resume, default run names and report rendering never delete or
read what the tool did not create."""
from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import signal
import stat
import sys
from pathlib import Path

import pytest
import torch

from mlwarden.cli.main import entry
from mlwarden.core.errors import UserError

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
    legacy = tmp_path / "legacy"          # an old-style run.json proves nothing: the folder is refused
    legacy.mkdir()
    (legacy / "keep.txt").write_text("keep")
    import hashlib
    (legacy / "run.json").write_text(json.dumps({"fingerprint": "f", "settings": {}, "subject": {}, "threats": [],
                                                 "created": [{"path": "keep.txt",
                                                              "sha256": hashlib.sha256(b"keep").hexdigest()}]}))
    r = audit(model, legacy)
    assert r.returncode == 2 and "kept no proofs" in r.stderr and (legacy / "keep.txt").read_text() == "keep"
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


def test_resume_refuses_edited_findings_and_reruns_removed_ones(model, tmp_path):
    """A finding changed since the run wrote it (emptied, or another threat's copied over it) is the user's
    now: --resume stops before touching it; once it is moved away, only that threat runs again."""
    out = tmp_path / "run"
    assert audit(model, out).returncode == 0
    good = (out / "findings" / "fgsm.json").read_text()
    (out / "findings" / "fgsm.json").write_text("")                                   # empty
    (out / "findings" / "unsafe-model-file.json").write_text(good)                    # wrong threat
    r = audit(model, out, "--resume")
    assert r.returncode == 2 and "changed since mlwarden wrote it" in r.stderr, r.stderr
    assert (out / "findings" / "fgsm.json").read_text() == ""
    assert (out / "findings" / "unsafe-model-file.json").read_text() == good
    (out / "findings" / "fgsm.json").unlink()
    (out / "findings" / "unsafe-model-file.json").unlink()
    r = audit(model, out, "--resume")
    assert r.returncode == 0, r.stderr
    assert "cached" not in r.stderr
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


# -- a hostile user's folders ----------------------------------------------------------------------------
# Each test builds what an attacker (or an unlucky user) would leave in a folder and runs the real command
# line on it, in this process (no interpreter start-up per call) and with the cheapest threat.

CHEAP = ["--threats", "unsafe-model-file", "--factory", "mlwarden.core.zoo:mlp", "--data", "digits"]


@contextlib.contextmanager
def deadline(seconds=120):
    """Fail, not hang, when something waits on a named pipe."""
    def expired(*_):
        raise TimeoutError(f"still running after {seconds} s")
    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture
def cli(monkeypatch, capsys):
    """`cli(*argv)`: the exit code and stderr of `mlwarden *argv`."""
    def run(*argv):
        monkeypatch.setattr(sys, "argv", ["mlwarden", *map(str, argv)])
        with deadline(), pytest.raises(SystemExit) as e:
            entry()
        return e.value.code, capsys.readouterr().err
    return run


@pytest.fixture
def made(cli, model, tmp_path):
    """`made(name)`: a run directory written by a real audit."""
    def make(name="run"):
        out = tmp_path / name
        code, err = cli("audit", "--model", model, *CHEAP, "--out", out)
        assert code == 0, err
        return out
    return make


def refused(code, err, *phrases):
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2 and "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def state(out):
    return json.loads((out / "run.json").read_text())


def put_state(out, s):
    (out / "run.json").write_text(json.dumps(s))


def listing(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_forged_record_or_run_json_deletes_nothing(cli, made, model, tmp_path):
    """A record an attacker adds to a real run.json, with the file's true SHA-256 and a proof lifted from
    another record, owns nothing; a run.json copied from another run directory, or forged whole, makes a
    folder nobody's: refused."""
    out = made()
    (out / "notes.txt").write_bytes(b"mine")
    s = state(out)
    lifted = s["created"][0]["proof"]
    s["created"] += [{"path": "notes.txt", "sha256": digest(b"mine"), "proof": lifted},
                     {"path": "notes.txt", "sha256": digest(b"mine"), "proof": "0" * 64}]
    put_state(out, s)
    code, err = cli("audit", "--model", model, *CHEAP, "--out", out)
    assert code == 0, err
    assert (out / "notes.txt").read_bytes() == b"mine"
    assert "notes.txt" not in [c["path"] for c in state(out)["created"]]
    copied, forged = tmp_path / "copied", tmp_path / "forged"
    for d in (copied, forged):
        d.mkdir()
        (d / "report.md").write_bytes((out / "report.md").read_bytes())   # the user's copy of a report
        (d / "notes.txt").write_bytes(b"mine")
    shutil.copy(out / "run.json", copied / "run.json")                      # real proofs, another folder's
    put_state(forged, {**state(out), "proof": "ab" * 32,
                       "created": [{"path": n, "sha256": digest((forged / n).read_bytes()), "proof": "cd" * 32}
                                   for n in ("report.md", "notes.txt")]})
    for d in (copied, forged):
        before = listing(d)
        code, err = cli("audit", "--model", model, *CHEAP, "--out", d)
        refused(code, err, f"--out {d}: is not an mlwarden run directory this installation can prove it made",
                "choose a new or empty folder")
        assert listing(d) == before


def test_the_model_and_other_inputs_survive_even_proven_records(cli, made, model):
    """The audited model, the config and the baseline sitting in --out with records that prove the tool
    wrote them (an audit of a hardened model saved where the audit writes) are neither deleted nor
    replaced; a baseline where the run writes its report stops the run."""
    out = made()
    shutil.copy(model, out / "model.pt")
    (out / "audit.toml").write_text("[audit]\nseed = 0\n")
    shutil.copy(out / "report.json", out / "base.json")
    from mlwarden.audit.rundir import RunDir, read_state
    RunDir(out, read_state(out)).add(out / "model.pt", out / "audit.toml", out / "base.json")   # proven records
    inputs = {n: (out / n).read_bytes() for n in ("model.pt", "audit.toml", "base.json")}
    code, err = cli("audit", "--model", out / "model.pt", "--config", out / "audit.toml", "--baseline",
                    out / "base.json", *CHEAP, "--out", out)
    assert code == 0, err
    assert {n: (out / n).read_bytes() for n in inputs} == inputs
    assert json.loads((out / "diff.json").read_text())["comparable"] is True        # the run did run
    report = (out / "report.json").read_bytes()
    code, err = cli("audit", "--model", model, *CHEAP, "--baseline", out / "report.json", "--out", out)
    refused(code, err, "report.json: is an input of this run")
    assert (out / "report.json").read_bytes() == report and (out / "report.html").exists()


def test_a_run_json_without_proofs_lets_nothing_be_overwritten(cli, model, tmp_path):
    """run.json as mlwarden wrote it before proofs (both older layouts), listing the user's report.md and
    junit.xml with their true hashes: the folder is refused and nothing in it changes."""
    layouts = {"legacy": {"fingerprint": "f", "settings": {}, "subject": {}, "threats": []},
               "unproven": {"kind": "mlwarden-run", "fingerprint": "f", "settings": {}, "threats": []}}
    for name, s in layouts.items():
        d = tmp_path / name
        d.mkdir()
        (d / "report.md").write_text("my report")
        (d / "junit.xml").write_text("<mine/>")
        put_state(d, {**s, "created": [{"path": n, "sha256": digest((d / n).read_bytes())}
                                       for n in ("report.md", "junit.xml")]})
        before = listing(d)
        code, err = cli("audit", "--model", model, *CHEAP, "--out", d)
        refused(code, err, f"--out {d}: is not an mlwarden run directory", "kept no proofs")
        assert listing(d) == before


def test_an_edited_or_unlisted_file_is_never_overwritten(cli, made, model):
    """A report the user edited since the run wrote it stops a re-run before anything is deleted; so does a
    file the run never listed where it wants to write (a report, or a threat's evidence)."""
    out = made()
    (out / "report.md").write_text("my edited report")
    before = listing(out)
    code, err = cli("audit", "--model", model, *CHEAP, "--out", out)
    refused(code, err, f"{out / 'report.md'}: changed since mlwarden wrote it", "move it out of")
    assert listing(out) == before
    (out / "report.md").unlink()                  # moved away: the run may make it afresh
    s = state(out)
    s["created"] = [c for c in s["created"] if c["path"] != "junit.xml"]
    put_state(out, s)
    (out / "junit.xml").write_text("<mine/>")     # same name, never listed
    code, err = cli("audit", "--model", model, *CHEAP, "--out", out)
    refused(code, err, f"{out / 'junit.xml'}: is in the way and mlwarden did not write it")
    assert (out / "junit.xml").read_text() == "<mine/>" and (out / "report.html").exists()
    from mlwarden.audit.rundir import check_replace   # what a threat's evidence_path asks before it writes
    (out / "evidence" / "fgsm").mkdir(parents=True)
    (out / "evidence" / "fgsm" / "adversarial_examples.png").write_bytes(b"mine")
    with pytest.raises(UserError, match="mlwarden did not write it"):
        check_replace(out, out / "evidence" / "fgsm" / "adversarial_examples.png")
    assert (out / "evidence" / "fgsm" / "adversarial_examples.png").read_bytes() == b"mine"


def test_resume_carries_over_only_proven_records(cli, made, model):
    """--resume rewrites run.json: a forged record in it is dropped, so the next run cannot delete its file."""
    out = made()
    (out / "notes.txt").write_bytes(b"mine")
    s = state(out)
    s["created"].append({"path": "notes.txt", "sha256": digest(b"mine"), "proof": s["created"][0]["proof"]})
    put_state(out, s)
    code, err = cli("audit", "--model", model, *CHEAP, "--out", out, "--resume")
    assert code == 0 and "cached" in err, err
    assert "notes.txt" not in [c["path"] for c in state(out)["created"]]
    code, err = cli("audit", "--model", model, *CHEAP, "--out", out)
    assert code == 0, err
    assert (out / "notes.txt").read_bytes() == b"mine"


def test_report_writes_only_its_own_files_in_a_proven_run_directory(cli, made, tmp_path):
    """`mlwarden report` on a folder of the user's (holding a report.json, and even a copied run.json), or on
    a JSON file there, overwrites nothing; in a proven run directory it leaves an edited report alone."""
    out = made()
    user = tmp_path / "user"
    user.mkdir()
    shutil.copy(out / "report.json", user / "report.json")
    shutil.copy(out / "report.json", user / "export.json")
    for n in ("report.html", "report.md", "report.sarif", "junit.xml"):
        (user / n).write_text(f"mine: {n}")
    before = listing(user)
    for target in (user, user / "export.json"):
        code, err = cli("report", target)
        refused(code, err, f"mlwarden report: {user}: is not an mlwarden run directory")
    shutil.copy(out / "run.json", user / "run.json")
    before["run.json"] = (user / "run.json").read_bytes()
    code, err = cli("report", user / "report.json")
    refused(code, err, "this installation can prove it made")
    assert listing(user) == before
    (out / "report.md").write_text("my edited report")
    before = listing(out)
    code, err = cli("report", out)
    refused(code, err, f"{out / 'report.md'}: changed since mlwarden wrote it")
    assert listing(out) == before               # nothing re-rendered: each file is checked before the first write


def test_harden_resume_refuses_a_swapped_hardened_model(cli, model, tmp_path, digits, digits_mlp):
    """A plain model put where harden saved the hardened one (a valid export: it would load) is not reported
    as hardened: --resume stops with one line naming it (moved away, the point is trained again), and
    leaves it as it is."""
    out = tmp_path / "h"
    args = ["harden", "--defense", "adversarial-training", "--param", "epochs=1", "--param", "steps=1",
            "--model", model, *CHEAP, "--recipe", "mlp", "--out", out]
    code, err = cli(*args)
    assert code == 0, err
    saved = out / "hardened" / "model.pt2"
    assert saved.name in [Path(c["path"]).name for c in state(out)["created"]]
    ep = torch.export.export(digits_mlp, (digits.x_test[:4],),
                             dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}})
    torch.export.save(ep, saved)                  # the plain model, where the hardened one was
    plain = saved.read_bytes()
    code, err = cli(*args, "--resume")
    refused(code, err, f"{saved}: changed since mlwarden wrote it", "makes that file afresh")
    assert saved.read_bytes() == plain


def test_a_named_pipe_where_a_run_file_belongs_is_an_error_not_a_hang(cli, made, model, tmp_path):
    out = made()
    (out / "report.json").unlink()
    os.mkfifo(out / "report.json")
    r = mlwarden("report", out, timeout=60)      # a process of its own: a hang fails here, not the suite
    refused(r.returncode, r.stderr, f"{out / 'report.json'}: is a named pipe, not a regular file")
    code, err = cli("audit", "--model", model, *CHEAP, "--out", out)
    refused(code, err, f"{out / 'report.json'}: was replaced by something that is not a regular file")
    code, err = cli("audit", "--model", model, *CHEAP, "--baseline", out / "report.json", "--out", tmp_path / "new")
    refused(code, err, "is a named pipe")
    assert stat.S_ISFIFO(os.lstat(out / "report.json").st_mode)


# -- an attacker racing the run (simulated in process: the hook does what the attacker does, when he does it) --
def stopped(code, err, *phrases):
    """A run stopped after it started: its header, then one error line (exit 2, no traceback)."""
    last = err.strip().splitlines()[-1]
    assert code == 2 and "Traceback" not in err and last.startswith("error: "), (code, err)
    for phrase in phrases:
        assert phrase in last, last


@pytest.fixture
def evidence_writer(monkeypatch):
    """fgsm writes evidence/fgsm/curve.png (as plotting threats do); `plant(path)`, set by a test, runs right
    after the guard approved that name and before the bytes are written."""
    from mlwarden.core import threat as core_threat
    from mlwarden.core.files import write_file
    from mlwarden.threats.tricking.fgsm import FGSM
    hook = {"plant": lambda path: None}
    approve = core_threat.Context.evidence_path
    run = FGSM.run

    def evidence_path(self, name):
        dest = approve(self, name)
        Path(dest).parent.mkdir(parents=True, exist_ok=True)   # the attacker plants in the threat's folder
        hook["plant"](Path(dest))
        return dest

    def run_and_plot(self, ctx, params):
        write_file(ctx.evidence_path("curve.png"), b"\x89PNG mlwarden's curve")
        return run(self, ctx, params)
    monkeypatch.setattr(core_threat.Context, "evidence_path", evidence_path)
    monkeypatch.setattr(FGSM, "run", run_and_plot)
    return hook


def test_a_run_folder_swapped_for_a_link_mid_run_stops_the_run(cli, model, tmp_path, monkeypatch):
    """A-1: once run.json is written the attacker renames --out away and puts a link to a user's folder in
    its place; every later write is refused (one line, exit 2) and the user's folder is untouched."""
    from mlwarden.audit import rundir
    user, out = tmp_path / "user", tmp_path / "out"
    (user / "findings").mkdir(parents=True)
    (user / "run.json").write_bytes(b"USER run.json")
    save = rundir.RunDir.save

    def save_then_swap(self):
        save(self)
        if not (tmp_path / "out.moved").exists():
            out.rename(tmp_path / "out.moved")
            out.symlink_to(user)
    monkeypatch.setattr(rundir.RunDir, "save", save_then_swap)
    code, err = cli("audit", "--model", model, *FAST, "--out", out)
    stopped(code, err, "was moved or replaced", "wrote nothing elsewhere")
    assert listing(user) == {"run.json": b"USER run.json"}


def test_a_link_planted_after_the_guard_is_replaced_not_written_through(cli, model, tmp_path, evidence_writer):
    """A-2: a symlink (or a hard link) planted at an evidence name after the guard approved it: the write
    replaces the link, the user's file keeps its bytes."""
    victim = tmp_path / "thesis.txt"
    victim.write_bytes(b"years of work")
    evidence_writer["plant"] = lambda path: path.symlink_to(victim)
    out = tmp_path / "run"
    code, err = cli("audit", "--model", model, *FAST, "--out", out)
    assert code == 0, err
    curve = out / "evidence" / "fgsm" / "curve.png"
    assert victim.read_bytes() == b"years of work"
    assert not curve.is_symlink() and curve.read_bytes() == b"\x89PNG mlwarden's curve"
    evidence_writer["plant"] = lambda path: (path.unlink(missing_ok=True), os.link(victim, path))
    code, err = cli("audit", "--model", model, *FAST, "--out", tmp_path / "run2")
    stopped(code, err, "hard links", "never replaces such a file")
    assert victim.read_bytes() == b"years of work"


def test_a_file_renamed_into_evidence_mid_run_is_never_recorded(cli, model, tmp_path, evidence_writer):
    """A-3: records come from the run's writes, not a scan of evidence/: a hard link to a user's file renamed
    in while the threat runs gets no record, and a file the run wrote that is swapped for one is refused on
    --resume as changed (never written through)."""
    victim = tmp_path / "keys.txt"
    victim.write_bytes(b"USER keys")
    out = tmp_path / "run"

    def launder(path):
        os.link(victim, path.parent / ".tmp")
        os.rename(path.parent / ".tmp", path.parent / "laundered.png")
    evidence_writer["plant"] = launder
    code, err = cli("audit", "--model", model, *FAST, "--out", out)
    assert code == 0, err
    records = {c["path"]: c["sha256"] for c in state(out)["created"]}
    assert "evidence/fgsm/laundered.png" not in records
    assert records["evidence/fgsm/curve.png"] == digest(b"\x89PNG mlwarden's curve")
    curve = out / "evidence" / "fgsm" / "curve.png"
    os.link(victim, out / ".tmp")
    os.rename(out / ".tmp", curve)               # the written file swapped for the user's, after the write
    (out / "findings" / "fgsm.json").unlink()
    evidence_writer["plant"] = lambda path: None
    code, err = cli("audit", "--model", model, *FAST, "--out", out, "--resume")
    refused(code, err, f"{curve}: changed since mlwarden wrote it")
    assert victim.read_bytes() == b"USER keys" and os.stat(victim).st_nlink == 3


def test_an_output_that_is_an_input_is_refused(cli, made, tmp_path):
    """A-4: scan X --json X, and diff with --json or --markdown naming one of its reports: one line, exit 2,
    the input unchanged."""
    victim = tmp_path / "m.pt"
    victim.write_bytes(b"not a model, but the user's")
    refused(*cli("scan", victim, "--json", victim), "is an input of this command")
    assert victim.read_bytes() == b"not a model, but the user's"
    out = made()
    before = (out / "report.json").read_bytes()
    refused(*cli("diff", out, out / "report.json", "--json", out / "report.json"), "is an input of this command")
    refused(*cli("diff", out / "report.json", out, "--markdown", out / "report.json"), "is an input")
    assert (out / "report.json").read_bytes() == before
