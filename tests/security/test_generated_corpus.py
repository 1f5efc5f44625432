"""The generated hostile corpus (tests/security/generator.py: every place x every spelling) through every
command that loads a model (`scan`, `audit`, `serve`, `harden`, `verify-copy`), in one process under a
Python audit hook and under strace: no payload runs (no sentinel file, no process started), nothing outside
the run folder is opened, every file is refused with exit 2, and the refusal is a finding, not a crash.
Trees whose arrays a file forged are refused by validation instead of crashing or hanging the process."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from mlwarden.io.scan import scan_file

from .generator import EXPR_SPELLINGS, SPELLINGS, TS_SPELLINGS, hostile_files, tree_files
from .test_hostile_files import DRIVER


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("generated")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return root, hostile_files(root / "hostile", root / "sentinel"), tree_files(root / "trees")


def _clean_extras(folder: Path) -> dict[str, Path]:
    """Clean files of the shapes the generator attacks: a .pt2 with dynamic shapes, constants and a
    buffer; TorchScript whose string literal mentions torch.save( (text matching would flag it); a
    neighbours model (Cython's newObj) and every forest and tree the tree corpus forges, unforged."""
    import pickle

    import joblib
    import skops.io as sio
    import torch
    from sklearn.datasets import load_digits
    from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression, SGDClassifier
    from sklearn.model_selection import GridSearchCV
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC
    folder.mkdir(parents=True, exist_ok=True)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(64, 10)
            self.register_buffer("scale", torch.full((10,), 2.0))
            self.shift = torch.ones(10)   # a tensor constant

        def forward(self, x):
            if x.shape[0] < 0:
                raise ValueError("never: torch.save( is only text here")
            return self.fc(x.reshape(x.shape[0], -1)) * self.scale + self.shift

    net = Net()
    ep = torch.export.export(net, (torch.zeros(3, 1, 8, 8),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(ep, folder / "constants-dynamic.pt2")
    torch.jit.save(torch.jit.script(net), folder / "string-literal.pt")
    x, y = load_digits(return_X_y=True)
    out = {"constants-dynamic.pt2": folder / "constants-dynamic.pt2", "string-literal.pt": folder / "string-literal.pt"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, m in {"knn-kd": KNeighborsClassifier(algorithm="kd_tree"),
                        "knn-ball": KNeighborsClassifier(algorithm="ball_tree"),
                        "forest": RandomForestClassifier(3, max_depth=4, random_state=0),
                        "hist-gb": HistGradientBoostingClassifier(max_iter=2),
                        "sgd": SGDClassifier(max_iter=20), "grid": GridSearchCV(LogisticRegression(max_iter=50),
                                                                                   {"C": [0.1, 1.0]}, cv=2),
                        "gb": GradientBoostingClassifier(n_estimators=3, max_depth=2), "svc": SVC(probability=True),
                        "sparse-logreg": LogisticRegression(max_iter=100)}.items():
            m.fit(x[:300] / 16, y[:300])
            if name == "sparse-logreg":
                m.sparsify()
            (folder / f"{name}.pkl").write_bytes(pickle.dumps(m))
            out[f"{name}.pkl"] = folder / f"{name}.pkl"
            joblib.dump(m, folder / f"{name}.joblib")      # numpy arrays raw inside the stream
            out[f"{name}.joblib"] = folder / f"{name}.joblib"
            if not name.startswith("knn"):
                sio.dump(m, folder / f"{name}.skops")
                out[f"{name}.skops"] = folder / f"{name}.skops"
    return out


def test_scan_flags_every_generated_file_and_no_clean_look_alike(generated, tmp_path):
    root, hostile, trees = generated
    assert len(hostile) == len(SPELLINGS) * 11 + 2 + 3 + 1 + len(EXPR_SPELLINGS) + 8 + len(TS_SPELLINGS) + 2
    assert [n for n, p in {**hostile, **trees}.items() if scan_file(p).safe] == []
    clean = _clean_extras(tmp_path / "clean")
    assert {n: scan_file(p).summary() for n, p in clean.items() if not scan_file(p).safe} == {}
    assert not any((root / "sentinel").iterdir())   # scanning ran nothing


def test_clean_look_alikes_load_through_mlwarden_and_predict_as_saved(tmp_path, digits):
    """mlwarden's own .pt2 reader (no torch.export.load) gives the exported program's answers exactly,
    constants and buffers included; a scripted model with the text 'torch.save(' in a string loads."""
    import torch

    from mlwarden.io.models import load_target
    clean = _clean_extras(tmp_path / "clean")
    x = digits.x_test[:20]
    ours = load_target(str(clean["constants-dynamic.pt2"]), digits)
    theirs = torch.export.load(str(clean["constants-dynamic.pt2"])).module()   # a file we made: safe here
    with torch.no_grad():
        assert torch.equal(ours.module(x), theirs(x))
    net = ours.module.eval().train().eval()      # torch's own module refuses both (backdoor scans call them)
    xg = x.clone().requires_grad_(True)
    net(xg).sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0
    assert load_target(str(clean["string-literal.pt"]), digits).labels(x).shape == (20,)
    import pickle
    for name in ("knn-kd.pkl", "knn-ball.pkl", "hist-gb.skops", "forest.pkl", "forest.joblib", "knn-ball.joblib"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = load_target(str(clean[name]), digits, allow_pickle=True)
            saved = pickle.loads(clean[name.rsplit(".", 1)[0] + ".pkl"].read_bytes())
        assert (t.labels(x).numpy() == saved.predict(x.flatten(1).numpy())).all(), name


def _strace_lines(log: Path) -> list[str]:
    lines = []
    for f in log.parent.glob(log.name + "*"):
        lines += f.read_text(errors="replace").splitlines()
    return lines


def test_generated_corpus_runs_nothing_through_any_command(generated, tmp_path):
    root, hostile, trees = generated
    assert shutil.which("strace"), "strace is needed (.ci/run installs it with apt-get)"
    runs = tmp_path / "runs"
    registry = tmp_path / "registry.jsonl"
    registry.write_text(json.dumps({"input": [0.0] * 64, "label": 3}) + "\n")
    clean = tmp_path / "clean.pt2"
    import torch
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    torch.export.save(torch.export.export(net, (torch.zeros(2, 1, 8, 8),),
                                          dynamic_shapes=({0: torch.export.Dim("batch")},)), clean)
    cases, expect = [], []
    for name, path in {**hostile, **trees}.items():
        pickled = ["--allow-pickle"] if name.endswith((".pkl", ".joblib")) else []
        cases.append(["audit", "--model", str(path), "--data", "digits", "--out", str(runs / name), *pickled])
        expect.append(name)
    one_per_place = {re.sub(r"^gen-(p0|p1|p2|p4|p5|inst|obj|system|no-stop|memo-stack-global)-", "gen-", n): n
                     for n in hostile}
    for name in sorted(set(one_per_place.values())):
        path = str(hostile[name])
        cases.append(["serve", path, "--data", "digits", "--port", "1"])
        cases.append(["verify-copy", "--registry", str(registry), "--model", str(clean), "--suspect", path])
        cases.append(["harden", "--defense", "adversarial-training", "--model", path, "--data", "digits",
                      "--out", str(runs / f"harden-{name}")])
        expect += [name] * 3
    log, trace = tmp_path / "events.jsonl", tmp_path / "strace.log"
    env = dict(os.environ, MPLCONFIGDIR=str(tmp_path / "mpl"), COLUMNS="200", OMP_NUM_THREADS="1")
    res = subprocess.run(["strace", "-f", "-qq", "-e", "trace=%file,%process", "-o", str(trace),
                          sys.executable, "-c", DRIVER, str(log), json.dumps(cases)],
                         capture_output=True, text=True, env=env, timeout=900, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]          # no crash (a segfault ends the whole driver)
    codes = json.loads(res.stdout.strip().splitlines()[-1])
    wrong = [(c[0], n, code) for c, n, code in zip(cases, expect, codes) if code != 2]
    assert wrong == []
    sentinel = root / "sentinel"
    assert sorted(os.listdir(sentinel)) == []               # no payload wrote its sentinel
    events = [json.loads(line) for line in log.read_text().splitlines()]
    spawned = [e for e in events if e["event"] not in ("open", "case") and "fc-list" not in e["args"]]
    assert spawned == []                                     # no process started (Python's view)
    traced = _strace_lines(trace)
    assert [ln for ln in traced if str(sentinel) in ln] == []            # and the kernel's view
    execs = [ln for ln in traced if "execve(" in ln and "= 0" in ln]
    assert all(sys.executable in ln or "fc-list" in ln or "/strace" in ln for ln in execs), execs[:5]
    for name in {**hostile, **trees}:
        rep = json.loads((runs / name / "report.json").read_text())
        assert [(f["threat"], f["severity"]) for f in rep["findings"]] == [("unsafe-model-file", "critical")], name


def test_forged_trees_are_refused_with_one_line(generated, tmp_path):
    from ..cli.run import mlwarden
    _, _, trees = generated
    r = mlwarden("audit", "--model", trees["forest-cycle.skops"], "--data", "digits", "--out", tmp_path / "r")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "malformed Tree" in err[0], r.stderr
