"""CatBoost classifiers in their own files (issue 33): `.cbm` (read by CatBoost in a child process under limits,
written back as JSON) and JSON (checked in Python before CatBoost reads it), never unpickled; the target answers
predict_proba, travels to workers as JSON bytes, exposes its oblivious trees to the tree attacks, and hostile
files are one-line errors."""
import json
import pickle
import re
import struct

import numpy as np
import pytest

from mlwarden.core.errors import UserError
from mlwarden.core.target import Access
from mlwarden.io.models import load_target, probe

from ..cli.run import mlwarden
from .tabular import write_csv

cb = pytest.importorskip("catboost")


def fit(data):
    """A tiny CatBoost classifier on the audit's train split."""
    model = cb.CatBoostClassifier(iterations=20, depth=3, thread_count=1, verbose=0, allow_writing_files=False,
                                  random_seed=0)
    return model.fit(data.x_train.numpy(), data.y_train.numpy())


def save(model, path):
    model.save_model(str(path), format="json" if str(path).endswith(".json") else "cbm")
    return path


def catboost_model_file(folder):
    """A tiny CatBoost file and the CLI arguments that audit it (for the contract suite)."""
    from sklearn.datasets import load_breast_cancer
    bc = load_breast_cancer()
    csv_path = folder / "patients.csv"
    data = write_csv(csv_path, bc.data, bc.target)
    path = save(fit(data), folder / "model.cbm")
    return path, ["--model", str(path), "--data", str(csv_path), "--label-column", "y"]


@pytest.fixture(scope="module")
def binary_model(tmp_path_factory, cancer):
    """The breast-cancer classifier saved both ways."""
    folder = tmp_path_factory.mktemp("cbm")
    model = fit(cancer[1])
    return model, save(model, folder / "m.cbm"), save(model, folder / "m.json")


@pytest.mark.parametrize("suffix, dataset", [("cbm", "cancer"), ("json", "cancer"), ("cbm", "wine"),
                                             ("json", "wine")])
def test_the_target_answers_what_predict_proba_answers(tmp_path, request, suffix, dataset):
    _, data = request.getfixturevalue(dataset)
    model = fit(data)
    t = load_target(str(save(model, tmp_path / f"m.{suffix}")), data)
    probe(t, data)
    assert (t.kind, t.access, t.n_classes) == ("catboost", Access.SCORES, data.n_classes)
    x = data.x_test.numpy()
    p = t.scores(data.x_test)
    assert p.shape == (len(x), data.n_classes)
    assert np.allclose(p.numpy(), model.predict_proba(x), atol=1e-5)
    assert t.queries == len(x)
    # the oblivious trees as full binary trees: the parsed ensemble predicts what CatBoost predicts
    ens = t.fn.ensemble(x[:50])
    assert (ens.library, ens.n_groups, len(ens.trees)) == ("catboost", 1 if data.n_classes == 2 else data.n_classes,
                                                           20 * (1 if data.n_classes == 2 else data.n_classes))
    assert np.array_equal(ens.predict(x), model.predict(x).reshape(-1).astype(np.int64))
    raw = model.predict(x, prediction_type="RawFormulaVal").reshape(len(x), -1)
    assert np.allclose(ens.margins(x), raw, atol=1e-6)


@pytest.mark.parametrize("dataset, suffix", [("cancer", "cbm"), ("wine", "cbm"), ("wine", "json")])
def test_a_catboost_model_travels_to_a_worker_as_checked_json(tmp_path, request, dataset, suffix):
    """As JSON that the worker checks again (a multiclass model once failed there: the rebuilt JSON it was sent
    had no class names)."""
    _, data = request.getfixturevalue(dataset)
    t = load_target(str(save(fit(data), tmp_path / f"m.{suffix}")), data)
    state = t.fn.__getstate__()
    assert isinstance(state["source"], bytes) and json.loads(state["source"])["oblivious_trees"]
    assert b"catboost" not in pickle.dumps(t.fn).split(b"mlwarden")[0]   # no pickled CatBoost object
    again = pickle.loads(pickle.dumps(t.fn))
    x = data.x_test.numpy()
    assert np.array_equal(again(x), t.fn(x))


def test_catboost_files_scan_by_content_and_format_is_forced(tmp_path, binary_model, cancer, wine):
    _, data = cancer
    _, cbm, js = binary_model
    renamed = tmp_path / "model.bin"   # recognised by content, not suffix
    renamed.write_bytes(cbm.read_bytes())
    r = mlwarden("scan", cbm, js, renamed, "--json", tmp_path / "scan.json")
    assert r.returncode == 0, r.stdout + r.stderr
    scans = json.loads((tmp_path / "scan.json").read_text())
    assert [(s["format"], s["safe"]) for s in scans] == [("catboost", True)] * 3
    assert load_target(str(renamed), data, fmt="catboost").kind == "catboost"
    with pytest.raises(UserError, match="format xgboost reads XGBoost's own JSON or UBJSON model files; this file "
                                        "reads as catboost"):
        load_target(str(js), data, fmt="xgboost")
    with pytest.raises(UserError, match="takes 30 features, the data has 13"):
        load_target(str(js), wine[1])


def _hostile(tmp_path, name, raw):
    path = tmp_path / name
    path.write_bytes(raw)
    return path


def _json_variants(doc):
    """(file name, edited model, what the error names)."""
    def edit(fn):
        d = json.loads(json.dumps(doc))
        fn(d)
        return d
    tree = lambda d: d["oblivious_trees"][0]
    yield "leaves.json", edit(lambda d: tree(d)["leaf_values"].pop()), "leaf_values must hold 2^3 x 1"
    yield "feature.json", edit(lambda d: tree(d)["splits"][0].update(float_feature_index=10**6)), \
        "split on float feature 1000000"
    yield "split_index.json", edit(lambda d: tree(d)["splits"][0].update(split_index=10**9)), "split_index 1000000000"
    yield "deep.json", edit(lambda d: tree(d).update(splits=tree(d)["splits"] * 10)), "at most 16"
    yield "regression.json", edit(lambda d: d["model_info"]["params"]["loss_function"].update(type="RMSE")), \
        "loss 'RMSE'; mlwarden audits classifiers"
    yield "cat.json", edit(lambda d: d["features_info"].update(categorical_features=[{"feature_index": 0}])), \
        "with categorical_features; mlwarden audits models of float features only"
    yield "depthwise.json", edit(lambda d: d.update(trees=d.pop("oblivious_trees"))), "non-symmetric trees"
    yield "borders.json", edit(lambda d: d["features_info"]["float_features"][0].update(
        borders=[float(j) for j in range(65536)])), "at most 65535"


def _hostile_files(folder, binary_model):
    """(path, what the one-line error says) for each hostile variant of the breast-cancer model."""
    _, cbm, js = binary_model
    raw = cbm.read_bytes()
    sizes = struct.pack("<I", 20) + struct.pack("<20i", *[3] * 20)   # the flatbuffer's TreeSizes vector
    at = raw.find(sizes)
    assert at > 0
    cases = [("truncated.cbm", raw[:len(raw) // 2], "declares a"),
             ("garbage.cbm", raw[:8] + bytes(range(256)) * ((len(raw) - 8) // 256 + 1), "CatBoost's reader"),
             ("trees1e9.cbm", raw[:at] + struct.pack("<I", 10**9) + raw[at + 4:], "CatBoost's reader"),
             ("depth30.cbm", raw[:at + 4] + struct.pack("<i", 30) + raw[at + 8:], "CatBoost's reader"),
             ("nested.json", b'{"features_info":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply")]
    doc = json.loads(js.read_text())
    cases += [(n, json.dumps(d).encode(), why) for n, d, why in _json_variants(doc)]
    return [(_hostile(folder, name, content), why) for name, content, why in cases]


def test_hostile_catboost_files_are_one_line_errors(tmp_path, binary_model, cancer):
    """CatBoost's native reader segfaults on a .cbm whose tree depth was edited (caught here as a crash of the
    child process); the JSON checks refuse what its reader would index out of range."""
    for path, why in _hostile_files(tmp_path, binary_model):
        with pytest.raises(UserError, match=re.escape(why)) as e:
            load_target(str(path), cancer[1])
        assert "\n" not in str(e.value) and path.name in str(e.value), str(e.value)


def test_fields_nobody_checked_never_reach_catboost(tmp_path, binary_model, cancer):
    """A class_to_label entry of 10^9 segfaults CatBoost 1.2.10's JSON reader (found while writing this
    loader): the model CatBoost reads is rebuilt from the checked fields, so the file loads and predicts."""
    model, _, js = binary_model
    doc = json.loads(js.read_text())
    doc["model_info"]["class_params"]["class_to_label"] = [0, 10**9]
    doc["model_info"]["class_params"]["classes_count"] = 10**9
    t = load_target(str(_hostile(tmp_path, "labels.json", json.dumps(doc).encode())), cancer[1])
    x = cancer[1].x_test.numpy()
    # what CatBoost reads, here and in a worker (sent the JSON as read, which it checks and rebuilds again)
    for scores in (t.fn, pickle.loads(pickle.dumps(t.fn))):
        assert "class_params" not in json.loads(scores._json)["model_info"]
        assert np.allclose(scores(x), model.predict_proba(x), atol=1e-5)


def test_each_split_finds_its_border_in_one_look_up(binary_model):
    """A split's border is looked up by value, not searched for in the feature's borders: a search per split is
    borders x splits comparisons (300k borders and 300k one-split trees, a 53 MB file, kept the check busy for
    hours). Counted through a border whose comparisons count themselves."""
    from mlwarden.io.catboost_files import check_model
    calls = []

    class Border(float):
        __hash__ = float.__hash__

        def __eq__(self, other):
            calls.append(other)
            return float.__eq__(self, other)

    doc = json.loads(binary_model[2].read_text())
    doc["features_info"]["float_features"][0]["borders"] = [float(j) for j in range(20_000)]
    split = {"border": Border(19_999.0), "float_feature_index": 0, "split_index": 19_999, "split_type": "FloatFeature"}
    doc["oblivious_trees"] = [{"leaf_values": [0.1, -0.1], "splits": [split]}] * 50
    checked = check_model(doc, "many-borders.json")
    assert checked.n_features == len(doc["features_info"]["float_features"])
    assert len(calls) <= 2 * 50, len(calls)


@pytest.mark.slow
def test_hostile_catboost_files_exit_2_through_the_cli(tmp_path, binary_model, cancer):
    csv_path, _ = cancer
    _hostile_files(tmp_path, binary_model)
    for name in ("depth30.cbm", "feature.json"):   # a crash of the native reader and a JSON check
        r = mlwarden("audit", "--model", tmp_path / name, "--data", csv_path, "--label-column", "y", "--threats",
                     "extract-retraining", "--out", tmp_path / f"out-{name}")
        assert r.returncode == 2, r.stderr[-2000:]
        assert len(r.stderr.strip().splitlines()) == 1 and name in r.stderr, r.stderr
        assert not (tmp_path / f"out-{name}" / "report.json").exists()


def test_real_categorical_and_regression_models_are_refused_in_one_line(tmp_path, cancer):
    _, data = cancer
    x, y = data.x_train.numpy()[:, :3], data.y_train.numpy()
    kinds = cb.Pool([[a, b, "high" if c > np.median(x[:, 2]) else "low"] for a, b, c in x], y, cat_features=[2])
    args = {"iterations": 5, "depth": 2, "thread_count": 1, "verbose": 0, "allow_writing_files": False}
    cat = cb.CatBoostClassifier(**args).fit(kinds)
    reg = cb.CatBoostRegressor(**args).fit(x, y)
    for model, suffix, why in ((cat, "cbm", "with categorical_features"), (cat, "json", "with categorical_features"),
                               (reg, "cbm", "loss 'RMSE'; mlwarden audits classifiers")):
        path = save(model, tmp_path / f"{type(model).__name__}.{suffix}")
        with pytest.raises(UserError, match=re.escape(why)) as e:
            load_target(str(path), data)
        assert "\n" not in str(e.value)


def test_a_missing_catboost_names_the_extra(binary_model, cancer, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "catboost", None)
    with pytest.raises(UserError, match=r"needs the 'trees' extra \(xgboost, lightgbm, catboost\)"):
        load_target(str(binary_model[2]), cancer[1])


@pytest.mark.slow
def test_audit_of_a_catboost_file_runs_the_black_box_threats(tmp_path, wine):
    csv_path, data = wine
    model = fit(data)
    path = save(model, tmp_path / "model.cbm")
    r = mlwarden("audit", "--model", path, "--data", csv_path, "--label-column", "y", "--threats",
                 "extract-retraining,square,label-only-membership,fgsm,tree-milp", "--out", tmp_path / "audit",
                 cwd=tmp_path)
    assert r.returncode in (0, 1), r.stderr[-2000:]
    report = json.loads((tmp_path / "audit" / "report.json").read_text())
    assert report["subject"]["model"]["kind"] == "catboost"
    findings = {f["threat"]: f for f in report["findings"]}
    assert findings["fgsm"]["status"] == "skipped" and "white-box" in findings["fgsm"]["headline"]
    for name in ("extract-retraining", "square", "label-only-membership"):
        assert findings[name]["status"] == "ok", findings[name]
    assert findings["tree-milp"]["status"] in ("ok", "unreliable"), findings["tree-milp"]

    def metric(threat, name):
        return next(m for m in findings[threat]["metrics"] if m["name"].startswith(name))
    clean = metric("square", "clean_accuracy")
    own = float((model.predict(data.x_test.numpy()).reshape(-1) == data.y_test.numpy()).mean())
    assert clean["n"] == len(data.x_test)
    assert clean["value"] == pytest.approx(own), (clean["value"], own)
    assert metric("square", "robust_accuracy")["value"] <= clean["value"]
    # the MILP attacked the oblivious trees as parsed: every example it found flips CatBoost's own prediction
    assert metric("tree-milp", "verification_failures")["value"] == 0
    assert metric("tree-milp", "robust_accuracy")["value"] <= metric("tree-milp", "clean_accuracy")["value"]
