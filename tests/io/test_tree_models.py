"""XGBoost and LightGBM models in their own files (issue 33): read by the library's own loader, never
unpickled, scanned safe, and audited end to end with the black-box threats."""
import json
import sys

import numpy as np
import pytest

from mlwarden.core.errors import UserError
from mlwarden.core.target import Access
from mlwarden.io.models import load_target, probe

from ..cli.run import mlwarden
from .tabular import write_csv  # noqa: F401 - tests/threats/test_tree_milp.py imports it from here

xgb = pytest.importorskip("xgboost")
lgb = pytest.importorskip("lightgbm")

pytestmark = pytest.mark.slow   # two end-to-end audits through the CLI


def fit(library, data):
    """A tiny classifier of the library on the audit's train split (sklearn wrapper; saved natively)."""
    args = {"n_estimators": 20, "max_depth": 3, "random_state": 0}
    model = (xgb.XGBClassifier(**args, n_jobs=1) if library == "xgboost"
             else lgb.LGBMClassifier(**args, n_jobs=1, verbose=-1))
    return model.fit(data.x_train.numpy(), data.y_train.numpy())


def save(model, path):
    if isinstance(model, xgb.XGBClassifier):
        model.save_model(path)
    else:
        model.booster_.save_model(path)
    return path


@pytest.mark.parametrize("library, suffix, dataset", [("xgboost", "json", "cancer"), ("xgboost", "ubj", "wine"),
                                                      ("lightgbm", "txt", "cancer"), ("lightgbm", "txt", "wine")])
def test_the_target_answers_what_predict_proba_answers(tmp_path, request, library, suffix, dataset):
    _, data = request.getfixturevalue(dataset)
    model = fit(library, data)
    t = load_target(str(save(model, tmp_path / f"m.{suffix}")), data)
    probe(t, data)
    assert (t.kind, t.access, t.n_classes) == (library, Access.SCORES, data.n_classes)
    p = t.scores(data.x_test)
    assert p.shape == (len(data.x_test), data.n_classes)
    assert np.allclose(p.numpy(), model.predict_proba(data.x_test.numpy()), atol=1e-5)
    assert t.queries == len(data.x_test)


def test_a_booster_travels_to_a_worker_as_its_model_not_a_pickle(tmp_path, wine):
    import pickle
    _, data = wine
    t = load_target(str(save(fit("xgboost", data), tmp_path / "m.json")), data)
    state = t.fn.__getstate__()
    assert isinstance(state["source"], bytes) and state["source"].startswith(b"{")   # UBJSON the library wrote
    again = pickle.loads(pickle.dumps(t.fn))
    x = data.x_test.numpy()
    assert np.array_equal(again(x), t.fn(x))


def test_mismatches_are_one_line_errors(tmp_path, cancer, wine):
    _, two = cancer
    _, three = wine
    xgb_path = str(save(fit("xgboost", two), tmp_path / "m.json"))
    with pytest.raises(UserError, match="takes 30 features, the data has 13"):
        load_target(xgb_path, three)
    with pytest.raises(UserError, match="format lightgbm reads LightGBM's own text model files; this file reads as xgboost"):
        load_target(xgb_path, two, fmt="lightgbm")
    (tmp_path / "cut.json").write_bytes((tmp_path / "m.json").read_bytes()[:300])   # the library's parser says why
    with pytest.raises(UserError, match=r"cut.json: not a loadable XGBoost model \(Expecting[^\n]*\)$"):
        load_target(str(tmp_path / "cut.json"), two)
    # a binary booster on three classes: probe's class-count check
    wide = fit("lightgbm", three)
    narrow = lgb.LGBMClassifier(n_estimators=5, verbose=-1).fit(three.x_train.numpy(), three.y_train.numpy() > 0)
    save(narrow, tmp_path / "binary.txt")
    t = load_target(str(tmp_path / "binary.txt"), three)
    with pytest.raises(UserError, match="labels up to 2 but model binary.txt outputs 2 classes"):
        probe(t, three)
    assert load_target(str(save(wide, tmp_path / "wide.txt")), three).n_classes == 3


def test_a_missing_library_names_the_extra(tmp_path, cancer, monkeypatch):
    _, data = cancer
    path = str(save(fit("lightgbm", data), tmp_path / "m.txt"))
    monkeypatch.setitem(sys.modules, "lightgbm", None)
    with pytest.raises(UserError, match=r"needs the 'trees' extra \(xgboost, lightgbm, catboost\).*mlwarden\[trees\]"):
        load_target(path, data)


def test_booster_files_scan_safe_and_a_json_that_is_no_model_is_a_one_line_error(tmp_path, cancer):
    csv_path, data = cancer
    files = [save(fit("xgboost", data), tmp_path / "m.json"), save(fit("xgboost", data), tmp_path / "m.ubj"),
             save(fit("lightgbm", data), tmp_path / "m.txt")]
    r = mlwarden("scan", *files, "--json", tmp_path / "scan.json")
    assert r.returncode == 0, r.stdout + r.stderr
    scans = json.loads((tmp_path / "scan.json").read_text())
    assert [(s["format"], s["safe"], s["references"]) for s in scans] == [("xgboost", True, []), ("xgboost", True, []),
                                                                          ("lightgbm", True, [])]
    (tmp_path / "settings.json").write_text(json.dumps({"learning_rate": 0.1, "trees": 20}))
    r = mlwarden("audit", "--model", tmp_path / "settings.json", "--data", csv_path, "--label-column", "y",
                 "--out", tmp_path / "out")
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "unknown model format" in r.stderr, r.stderr
    assert not (tmp_path / "out" / "report.json").exists()


@pytest.mark.parametrize("library, suffix, dataset", [("xgboost", "json", "cancer"), ("lightgbm", "txt", "wine")])
def test_audit_of_a_native_booster_file_runs_the_black_box_threats(tmp_path, request, library, suffix, dataset):
    csv_path, data = request.getfixturevalue(dataset)
    model = fit(library, data)
    path = save(model, tmp_path / f"model.{suffix}")
    r = mlwarden("audit", "--model", path, "--data", csv_path, "--label-column", "y", "--threats",
                 "extract-retraining,square,label-only-membership,fgsm", "--out", tmp_path / "audit", cwd=tmp_path)
    assert r.returncode in (0, 1), r.stderr[-2000:]
    report = json.loads((tmp_path / "audit" / "report.json").read_text())
    assert report["subject"]["model"]["kind"] == library
    findings = {f["threat"]: f for f in report["findings"]}
    assert findings["fgsm"]["status"] == "skipped" and "white-box" in findings["fgsm"]["headline"]
    for name in ("extract-retraining", "square", "label-only-membership"):
        assert findings[name]["status"] == "ok", findings[name]

    def metric(threat, name):
        return next(m for m in findings[threat]["metrics"] if m["name"].startswith(name))
    agreement = metric("extract-retraining", "agreement on test data")["value"]
    assert isinstance(agreement, float) and 0.0 <= agreement <= 1.0
    # the accuracy the audit measured through the target is the booster's own on the test split
    clean = metric("square", "clean_accuracy")
    own = float((model.predict(data.x_test.numpy()) == data.y_test.numpy()).mean())
    assert clean["n"] == len(data.x_test)
    assert clean["value"] == pytest.approx(own), (clean["value"], own)
    assert metric("square", "robust_accuracy")["value"] <= clean["value"]


def test_malformed_trees_are_one_line_errors_not_native_crashes(tmp_path, cancer):
    """Cycles, out-of-range children or features and a wrong tree_sizes header crashed or hung the native
    predictors (segfault, abort, endless loop); they are refused before the library sees them."""
    from mlwarden.io.boosters import BoosterScores
    rng = np.random.default_rng(0)
    x = rng.random((200, 4)).astype(np.float32)
    y = (x[:, 0] > 0.5).astype(int)
    b = xgb.train({"objective": "binary:logistic", "max_depth": 2, "nthread": 1}, xgb.DMatrix(x, y), 2)
    doc = json.loads(bytes(b.save_raw("json")))
    tree = doc["learner"]["gradient_booster"]["model"]["trees"][0]
    n = len(tree["left_children"])
    for key, value in (("left_children", [0] * n), ("split_indices", [10**8] * n)):
        bad = json.loads(json.dumps(doc))
        bad["learner"]["gradient_booster"]["model"]["trees"][0][key] = value
        (tmp_path / "m.json").write_text(json.dumps(bad))
        with pytest.raises(UserError, match="not a loadable"):
            BoosterScores(str(tmp_path / "m.json"), "xgboost", "m.json")
    (tmp_path / "deep.json").write_text('{"learner":' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(UserError, match="nested too deeply"):
        BoosterScores(str(tmp_path / "deep.json"), "xgboost", "deep.json")
    m = lgb.train({"objective": "binary", "num_leaves": 4, "verbose": -1, "num_threads": 1}, lgb.Dataset(x, y), 2)
    text = m.model_to_string()
    for old, new in (("left_child=", "left_child=0 "), ("split_feature=", "split_feature=99999 ")):
        i = text.index(old)
        j = text.index("\n", i)
        k = len(text[i:j].split())   # same count of values, the first one replaced
        vals = text[i + len(old):j].split()
        line = old + " ".join([new[len(old):].strip()] + vals[1:]) if k else text[i:j]
        (tmp_path / "m.txt").write_text(text[:i] + line + text[j:])
        with pytest.raises(UserError, match="not a loadable"):
            BoosterScores(str(tmp_path / "m.txt"), "lightgbm", "m.txt")


def test_a_ubjson_booster_is_decoded_and_checked_before_xgboost_reads_it(tmp_path):
    """XGBoost's UBJSON reader trusts declared sizes and tree links: a cycle segfaulted the audit."""
    import struct

    from mlwarden.io.boosters import BoosterScores, _ubj_or_error

    def enc(v):
        if isinstance(v, bool):
            return b"T" if v else b"F"
        if isinstance(v, int):
            return b"L" + struct.pack(">q", v)
        if isinstance(v, float):
            return b"d" + struct.pack(">f", v)
        if isinstance(v, str):
            return b"SL" + struct.pack(">q", len(v.encode())) + v.encode()
        if isinstance(v, list):
            return b"[" + b"".join(map(enc, v)) + b"]"
        return b"{" + b"".join(b"L" + struct.pack(">q", len(k.encode())) + k.encode() + enc(x) for k, x in v.items()) + b"}"

    rng = np.random.default_rng(0)
    x = rng.random((100, 4)).astype(np.float32)
    b = xgb.train({"objective": "binary:logistic", "max_depth": 2, "nthread": 1}, xgb.DMatrix(x, x[:, 0] > 0.5), 2)
    raw = bytes(b.save_raw("ubj"))
    doc = _ubj_or_error(raw, "m.ubj")
    assert doc == json.loads(bytes(b.save_raw("json"))) or doc["learner"]["learner_model_param"]
    (tmp_path / "ok.ubj").write_bytes(raw)
    assert BoosterScores(str(tmp_path / "ok.ubj"), "xgboost", "ok.ubj").n_features == 4
    tree = doc["learner"]["gradient_booster"]["model"]["trees"][0]
    tree["left_children"] = [0] * len(tree["left_children"])
    (tmp_path / "m.ubj").write_bytes(enc(doc))
    with pytest.raises(UserError, match="not a loadable"):
        BoosterScores(str(tmp_path / "m.ubj"), "xgboost", "m.ubj")
    (tmp_path / "big.ubj").write_bytes(b"{L" + struct.pack(">q", 7) + b"learner[$d#L" + struct.pack(">q", 1 << 40))
    with pytest.raises(UserError, match="past the end"):
        BoosterScores(str(tmp_path / "big.ubj"), "xgboost", "big.ubj")


def test_a_huge_declared_num_class_is_refused_before_xgboost_allocates_it(tmp_path):
    from mlwarden.io.boosters import BoosterScores
    x = np.random.default_rng(0).random((100, 4)).astype(np.float32)
    b = xgb.train({"objective": "binary:logistic", "max_depth": 2, "nthread": 1}, xgb.DMatrix(x, x[:, 0] > 0.5), 2)
    doc = json.loads(bytes(b.save_raw("json")))
    doc["learner"]["learner_model_param"]["num_class"] = "1000000000"   # XGBoost allocated GBs for it
    (tmp_path / "m.json").write_text(json.dumps(doc))
    with pytest.raises(UserError, match="num_class 1000000000"):
        BoosterScores(str(tmp_path / "m.json"), "xgboost", "m.json")
