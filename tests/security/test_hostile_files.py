"""The hostile-file corpus: every file that would run code, read outside its folder or unpack a bomb is
flagged by the scan, refused by every loader (audit writes a report of one critical finding and exits 2;
serve exits 2), and no code from it runs. Clean files of every format pass the scan and load."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlwarden.io.scan import scan_file

from ..cli.run import mlwarden
from .corpus import clean_files, hostile_files

# Runs mlwarden commands in one process under a Python audit hook that records every file opened and
# every attempt to start a process, so the test sees reads and writes a payload would make.
DRIVER = r"""
import json, os, sys
log = open(sys.argv[1], "a")
def hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        log.write(json.dumps({"event": "open", "path": os.path.abspath(os.fsdecode(args[0])),
                              "mode": str(args[1])}) + "\n")
    elif event.startswith(("os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "subprocess.",
                           "pty.")):
        log.write(json.dumps({"event": event, "args": repr(args)[:200]}) + "\n")
    else:
        return
    log.flush()
sys.addaudithook(hook)
from mlwarden.cli.main import entry
codes = []
for argv in json.loads(sys.argv[2]):
    sys.argv = ["mlwarden", *argv]
    log.write(json.dumps({"event": "case", "argv": argv}) + "\n"); log.flush()
    try:
        entry()
        codes.append(0)
    except SystemExit as e:
        codes.append(e.code if isinstance(e.code, int) else 1)
print(json.dumps(codes))
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    return root, hostile_files(root / "hostile", root / "outside"), clean_files(root / "clean")


def test_scan_flags_every_hostile_file_and_no_clean_file(corpus):
    _, hostile, clean = corpus
    assert len(hostile) >= 34 and len(clean) >= 20
    missed = [n for n, p in hostile.items() if scan_file(p).safe]
    false_alarms = {n: scan_file(p).summary() for n, p in clean.items() if not scan_file(p).safe}
    assert missed == []
    assert false_alarms == {}


def test_dangerous_names_are_named_as_such(corpus):
    _, hostile, _ = corpus
    s = scan_file(hostile["skops-exec-chain.skops"])
    assert {"builtins.exec": "dangerous", "numpy.full_like": "untrusted"}.items() <= \
        {r.name: r.verdict for r in s.unsafe}.items()
    assert "--trust" not in s.summary()


def test_no_hostile_file_runs_code_or_touches_files_outside_the_run(corpus, tmp_path):
    root, hostile, _ = corpus
    runs = tmp_path / "runs"
    cases = []
    for name, path in hostile.items():
        cases.append(["audit", "--model", str(path), "--data", "digits", "--out", str(runs / name)])
    for name in ("reduce-os-system.pkl", "skops-exec-chain.skops", "state-dict-payload.pt"):
        extra = ["--allow-pickle"] if name.endswith(".pkl") else ["--factory", "mlwarden.core.zoo:mlp"] \
            if name.endswith(".pt") else []
        cases.append(["serve", str(hostile[name]), "--data", "digits", "--port", "1", *extra])
    log = tmp_path / "events.jsonl"
    env = dict(os.environ, MPLCONFIGDIR=str(tmp_path / "mpl"), COLUMNS="200")
    res = subprocess.run([sys.executable, "-c", DRIVER, str(log), json.dumps(cases)], capture_output=True,
                         text=True, env=env, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    codes = json.loads(res.stdout.strip().splitlines()[-1])
    assert codes == [2] * len(cases), list(zip([c[2] if c[0] == "audit" else c[1] for c in cases], codes))

    events = [json.loads(line) for line in log.read_text().splitlines()]
    # matplotlib lists fonts with fc-list the first time it builds its font cache: the one process expected
    spawned = [e for e in events if e["event"] not in ("open", "case") and "fc-list" not in e["args"]]
    assert spawned == []                                                     # no process started
    assert sorted(p.name for p in (root / "outside").iterdir()) == ["secret.bin"]   # no payload wrote
    current, touched = None, []
    for e in events:
        if e["event"] == "case":
            current = e["argv"]
            continue
        if e["event"] != "open":
            continue
        path = e["path"]
        if not path.startswith(str(root)) and not path.startswith(str(runs)):
            continue
        model = os.path.abspath(current[2] if current[0] == "audit" else current[1])
        run_dir = os.path.abspath(current[current.index("--out") + 1]) if "--out" in current else None
        if path == model or (run_dir and (path == run_dir or path.startswith(run_dir + os.sep))):
            continue
        touched.append((Path(model).name, path, e["mode"]))
    assert touched == []                                 # nothing outside the run read or written

    for name in hostile:
        rep = json.loads((runs / name / "report.json").read_text())
        assert [(f["threat"], f["severity"]) for f in rep["findings"]] == [("unsafe-model-file", "critical")]
        assert rep["findings"][0]["details"]["untrusted"] or rep["findings"][0]["details"]["problems"]


def test_refusal_is_one_line_and_names_the_way_out(corpus, tmp_path):
    _, hostile, _ = corpus
    r = mlwarden("audit", "--model", hostile["gadget-timeit.pkl"], "--data", "digits", "--out", tmp_path / "r")
    assert r.returncode == 2
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "timeit.timeit" in err[0] and "--trust timeit.timeit" in err[0]
    assert "Traceback" not in r.stderr


def test_cli_scan_exit_codes_and_json(corpus, tmp_path):
    _, hostile, clean = corpus
    ok = mlwarden("scan", Path(clean["logreg.skops"]).parent)
    assert ok.returncode == 0, ok.stdout
    folder = Path(hostile["reduce-exec.pkl"]).parent
    (folder / "README.txt").write_text("notes about these models.")
    bad_dir = mlwarden("scan", folder)
    assert bad_dir.returncode == 1
    assert f"{len(hostile)} of {len(hostile)} files unsafe; 1 file in folders passed over" in bad_dir.stdout
    bad = mlwarden("scan", clean["tree.skops"], hostile["reduce-exec.pkl"], "--json", tmp_path / "s.json")
    assert bad.returncode == 1
    assert "builtins.exec" in bad.stdout and "1 of 2 files unsafe" in bad.stdout
    data = json.loads((tmp_path / "s.json").read_text())
    assert [d["safe"] for d in data] == [True, False]
    assert mlwarden("scan", tmp_path / "nope.pt").returncode == 2


def test_trust_lets_a_named_function_load_knowingly(corpus, tmp_path, digits):
    """--trust names exactly what may load; the audit then reports the file as high, not info."""
    import numpy as np
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer
    x, y = digits.x_train.flatten(1).numpy(), digits.y_train.numpy()
    pipe = make_pipeline(FunctionTransformer(np.sqrt), LogisticRegression(max_iter=300)).fit(x, y)
    sio.dump(pipe, tmp_path / "sqrt.skops")
    r = mlwarden("audit", "--model", tmp_path / "sqrt.skops", "--data", "digits", "--out", tmp_path / "a",
                 "--threats", "unsafe-model-file")
    assert r.returncode == 2 and "--trust numpy.sqrt" in r.stderr
    r = mlwarden("audit", "--model", tmp_path / "sqrt.skops", "--data", "digits", "--out", tmp_path / "b",
                 "--threats", "unsafe-model-file", "--trust", "numpy.sqrt")
    assert r.returncode == 0, r.stderr
    f = json.loads((tmp_path / "b" / "report.json").read_text())["findings"][0]
    assert f["severity"] == "high" and f["details"]["trusted_by_user"] == ["numpy.sqrt"]


def test_clean_files_load_and_predict_like_the_original(corpus, digits):
    """The restricted loaders accept what the scan accepts: clean sklearn pickles and skops files load
    through the trust list and predict exactly like the objects they were saved from."""
    import pickle
    import warnings

    from mlwarden.io.models import load_target
    _, _, clean = corpus
    x = digits.x_test[:50]
    for name in ("logreg", "forest", "hist-gb", "mlp", "svc-pipeline", "tree"):
        want = pickle.loads(clean[f"{name}.pkl"].read_bytes()).predict_proba(x.flatten(1).numpy()).argmax(1)
        for ext in ("skops", "pkl"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t = load_target(str(clean[f"{name}.{ext}"]), digits, allow_pickle=True)
            assert (t.labels(x).numpy() == want).all(), f"{name}.{ext}"
    for name, fmt in (("pickled-sequential.pt", "pickle"), ("torchscript.pt", "torchscript"),
                      ("exported.pt2", "export")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = load_target(str(clean[name]), digits, fmt=fmt, allow_pickle=True)
        assert t.labels(x).shape == (50,) and t.source["safe"]


def test_loader_never_calls_an_object_the_pickle_built(tmp_path, digits):
    """Every name below is trusted, so the static scan passes; the restricted unpickler still refuses to
    call an instance (a trusted class whose instances do work when called would be a gadget)."""
    import pickle

    import torch

    from mlwarden.core.errors import UserError
    from mlwarden.io.models import load_target

    from .corpus import CallableReduce, _Reduce
    layer = CallableReduce(torch.nn.Identity)
    (tmp_path / "call.pkl").write_bytes(pickle.dumps(_Reduce(layer, ("x",)), protocol=2))
    scan = scan_file(tmp_path / "call.pkl")
    assert [r.verdict for r in scan.references if r.verdict != "trusted"] == []   # every name is trusted,
    assert not scan.safe and "cannot unpickle" in scan.summary()    # yet the scan's restricted load refuses it
    with pytest.raises(UserError, match="cannot unpickle"):            # torch's weights_only path refuses
        load_target(str(tmp_path / "call.pkl"), digits, allow_pickle=True)
    import io

    from mlwarden.io.pickled import _RestrictedUnpickler
    with pytest.raises(pickle.UnpicklingError, match="calls a Identity object it built"):   # and so does ours
        _RestrictedUnpickler(io.BytesIO((tmp_path / "call.pkl").read_bytes()), frozenset()).load()


def test_crafted_report_json_gives_one_line_or_a_safe_report(tmp_path, digits, mlp_state_dict):
    """`mlwarden report` reads report.json from anywhere: wrong types are one line, markup stays inert."""
    r = mlwarden("audit", "--model", mlp_state_dict, "--factory", "mlwarden.core.zoo:mlp", "--data", "digits",
                 "--threats", "unsafe-model-file", "--out", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    good = json.loads((tmp_path / "run" / "report.json").read_text())
    variants = {"params-list": ("params", [1, 2]), "evidence-int": ("evidence", [5]), "details-str": ("details", "x"),
                "metrics-str": ("metrics", "m")}
    from mlwarden.core.errors import UserError
    from mlwarden.report.report import Report
    for name, (key, value) in variants.items():   # what `mlwarden report DIR` calls, in process
        rep = json.loads(json.dumps(good))
        rep["findings"][0][key] = value
        d = tmp_path / name
        d.mkdir()
        (d / "report.json").write_text(json.dumps(rep))
        with pytest.raises(UserError, match="not an mlwarden report"):
            Report.load(d)
    rep = json.loads(json.dumps(good))
    rep["findings"][0]["headline"] = "<script>alert(1)</script> | broken"
    d = tmp_path / "run"          # `mlwarden report` re-renders only in a run directory: its report.json edited
    (d / "report.json").write_text(json.dumps(rep))
    res = mlwarden("report", d)
    assert res.returncode == 0, res.stderr
    for f in ("report.md", "report.html"):
        assert "<script>" not in (d / f).read_text(), f
