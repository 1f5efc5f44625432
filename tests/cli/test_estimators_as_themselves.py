"""A scikit-learn estimator or a booster is retrained as itself wherever mlwarden retrains the model (issue 33;
issue 34's "harden swapped a random forest for a worse MLP"): `harden` with a data sanitizer saves the same
model type in the user's format and compares the user's model with it, membership inference trains reference
models of the same type, network-only defences and `--recipe` refuse in one line, and `serve` answers."""
import json
import shlex

import numpy as np
import pytest
import torch

from .run import infer_body, mlwarden, served

pytest.importorskip("xgboost")
pytest.importorskip("skops")


def flipped_wine(folder, share=0.2, seed=0):
    """Wine, features standardized (k-NN sanitization works in input space), with `share` of the training
    labels flipped to another class; returns (path, flipped index, true training labels)."""
    from sklearn.datasets import load_wine
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler
    x, y = load_wine(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, random_state=seed, stratify=y)
    scaler = StandardScaler().fit(xtr)
    xtr, xte = scaler.transform(xtr).astype(np.float32), scaler.transform(xte).astype(np.float32)
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(ytr), int(share * len(ytr)), replace=False)
    bad = ytr.copy()
    bad[idx] = (bad[idx] + rng.integers(1, 3, len(idx))) % 3
    path = folder / "wine-flipped.npz"
    np.savez(path, x_train=xtr, y_train=bad, x_test=xte, y_test=yte)
    return path, idx, ytr


def forest_file(folder, data_path) -> str:
    """A scikit-learn Pipeline (scaler + random forest) trained on the data, saved with joblib.dump."""
    import joblib
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    d = np.load(data_path)
    model = make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=25, random_state=0))
    joblib.dump(model.fit(d["x_train"], d["y_train"]), folder / "forest.joblib")
    return folder / "forest.joblib"


def xgb_file(folder, data_path) -> str:
    """An XGBoost classifier trained on the data, saved with save_model (JSON)."""
    import xgboost
    d = np.load(data_path)
    xgboost.XGBClassifier(n_estimators=15, max_depth=3, nthread=1).fit(d["x_train"], d["y_train"]).save_model(
        folder / "xgb.json")
    return folder / "xgb.json"


def cbm_file(folder, data_path) -> str:
    """A CatBoost classifier trained on the data, saved with save_model (.cbm)."""
    import catboost
    d = np.load(data_path)
    catboost.CatBoostClassifier(iterations=20, depth=3, learning_rate=0.3, thread_count=1, verbose=0,
                                allow_writing_files=False).fit(d["x_train"], d["y_train"]).save_model(
        str(folder / "model.cbm"))
    return folder / "model.cbm"


MODEL_FILES = {"forest": forest_file, "xgboost": xgb_file, "catboost": cbm_file}


def one_line_error(r) -> str:
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("error:")]
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


@pytest.mark.parametrize("kind", ["forest", "xgboost", "catboost"])
def test_harden_retrains_the_model_as_itself(tmp_path, kind):
    from mlwarden.defenses.knn_sanitization import KnnSanitizer
    from mlwarden.io.datasets import load_data
    from mlwarden.io.models import load_target
    data, flipped, truth = flipped_wine(tmp_path)
    if kind == "catboost":
        pytest.importorskip("catboost")
    model = MODEL_FILES[kind](tmp_path, data)
    out = tmp_path / "h"
    r = mlwarden("harden", "--model", model, *(["--allow-pickle"] if kind == "forest" else []), "--data", data,
                 "--defense", "knn-label-sanitization", "--out", out, cwd=tmp_path)
    assert r.returncode in (0, 1), r.stderr[-2000:]
    summary = json.loads((out / "harden.json").read_text())
    point = summary["points"][0]
    saved = point["model"]
    # the same model type, in the user's format, loaded back through mlwarden's own (scanning) loader
    ds = load_data(str(data))
    target = load_target(str(tmp_path / saved["path"]), ds)
    if kind == "forest":
        assert saved["format"] == "skops" and saved["path"].endswith(".skops")
        assert type(target.estimator).__name__ == "Pipeline"
        assert type(target.estimator.steps[-1][1]).__name__ == "RandomForestClassifier"
    elif kind == "catboost":
        from mlwarden.io.catboost_files import CatBoostScores
        assert saved["format"] == "catboost" and saved["path"].endswith(".cbm")
        assert isinstance(target.fn, CatBoostScores) and target.fn.loss == "MultiClass"
        assert (tmp_path / saved["path"]).read_bytes()[:4] == b"CBM1"
        assert max(len(t["splits"]) for t in target.fn._doc["oblivious_trees"]) <= 3   # the user's depth 3
        assert len(target.fn._doc["oblivious_trees"]) == 20
    else:
        assert saved["format"] == "xgboost" and saved["path"].endswith(".json")
        assert target.fn.library == "xgboost" and type(target.fn._booster).__name__ == "Booster"
    md = (out / "harden.md").read_text()
    # the report names both sides and prints the test accuracy measured before and after
    assert "retrained as itself" in md and model.name in md
    acc_row = next(line for line in md.splitlines() if line.startswith("| test accuracy |"))
    assert f"(n={len(ds.y_test)}" in acc_row.split("|")[2] and f"(n={len(ds.y_test)}" in acc_row.split("|")[3]
    assert 0.0 <= point["accuracy"]["value"] <= 1.0 and summary["before"]["accuracy"]["n"] == len(ds.y_test)
    # the sanitizer's measured effect on the 20% flipped labels: it changed the labels of a larger share of the
    # flipped points than of the clean ones, and restored most flipped ones; its count is the report's
    p = point["params"]["knn-label-sanitization"]
    y = torch.as_tensor(np.load(data)["y_train"])
    _, y_new = KnnSanitizer(p["k"], p["eta"]).sanitize(torch.as_tensor(np.load(data)["x_train"]), y)
    changed = (y_new != y).numpy()
    is_flipped = np.zeros(len(y), bool)
    is_flipped[flipped] = True
    restored = (y_new.numpy()[is_flipped] == truth[is_flipped]).mean()
    assert changed[is_flipped].mean() > 3 * changed[~is_flipped].mean() and restored > 0.5
    assert point["evaluation"]["knn-label-sanitization"]["relabelled"] == int(changed.sum())
    # the command the report prints to audit the hardened model runs as printed
    audit = shlex.split(saved["audit"])
    assert audit[:2] == ["mlwarden", "audit"]
    r2 = mlwarden(*audit[1:], "--threats", "unsafe-model-file", "--out", tmp_path / "again", cwd=tmp_path)
    assert r2.returncode == 0, r2.stderr[-1500:]


@pytest.mark.parametrize("kind", ["forest", "catboost"])
def test_membership_reference_models_are_the_same_kind(tmp_path, kind):
    if kind == "catboost":
        pytest.importorskip("catboost")
    data, _, _ = flipped_wine(tmp_path, share=0.0)
    model = MODEL_FILES[kind](tmp_path, data)
    pickle = ["--allow-pickle"] if kind == "forest" else []
    r = mlwarden("audit", "--model", model, *pickle, "--data", data, "--threats", "membership-inference",
                 "--out", tmp_path / "a", cwd=tmp_path, env_cache=tmp_path / "cache")
    assert r.returncode in (0, 1), r.stderr[-2000:]
    f = next(f for f in json.loads((tmp_path / "a" / "report.json").read_text())["findings"]
             if f["threat"] == "membership-inference")
    assert f["status"] in ("ok", "unreliable")
    name = "RandomForestClassifier" if kind == "forest" else "CatBoost MultiClass, 20 iterations, depth 3"
    assert any("Reference models: 8" in n and name in n for n in f["details"]["notes"]), f["details"]["notes"]
    assert f["details"]["models_pooled"] == 8
    # its remedy (DP-SGD) trains networks: the report says so instead of printing a command that exits 2
    assert f["remedy"]["command"] == "" and "dp-sgd trains networks" in f["remedy"]["description"]


def test_network_defences_and_recipes_refuse_a_forest_in_one_line(tmp_path):
    data, _, _ = flipped_wine(tmp_path, share=0.0)
    model = forest_file(tmp_path, data)
    base = ("harden", "--model", model, "--allow-pickle", "--data", data)
    line = one_line_error(mlwarden(*base, "--defense", "dp-sgd", "--out", tmp_path / "o1", cwd=tmp_path))
    assert "dp-sgd trains networks with Opacus" in line and "RandomForestClassifier is retrained as itself" in line
    assert "knn-label-sanitization" in line   # it names the defences that can
    line = one_line_error(mlwarden(*base, "--defense", "knn-label-sanitization", "--recipe", "mlp",
                                   "--out", tmp_path / "o2", cwd=tmp_path))
    assert "--recipe mlp" in line and "retrains as itself" in line
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()   # refused before any work


@pytest.mark.parametrize("kind", ["forest", "xgboost"])
def test_serve_answers_an_estimator_and_a_booster(tmp_path, kind):
    import httpx
    data, _, _ = flipped_wine(tmp_path, share=0.0)
    model = forest_file(tmp_path, data) if kind == "forest" else xgb_file(tmp_path, data)
    x = np.load(data)["x_test"][:3]
    extra = ("--allow-pickle",) if kind == "forest" else ()
    with served(model, *extra, data=str(data)) as url:
        r = httpx.post(f"{url}/v2/models/model/infer", json=infer_body(x), timeout=30)
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    got = np.asarray(out["data"]).reshape(out["shape"])
    if kind == "forest":
        import joblib
        want = joblib.load(model).predict_proba(x)
    else:
        import xgboost
        want = xgboost.XGBClassifier()
        want.load_model(model)
        want = want.predict_proba(x)
    assert got.shape == (3, 3) and np.allclose(got, want, atol=1e-5)
