"""io/estimator_recipe.py: a scikit-learn estimator or a booster retrained as itself (never a network), what
refuses it (network-only defences and threats), and that a booster's file cannot steer its training."""
import os
import pickle

import numpy as np
import pytest
import torch

from mlwarden.audit.runner import Subject
from mlwarden.core.data import make_dataset
from mlwarden.core.defense import check_applicable
from mlwarden.core.errors import UserError
from mlwarden.core.registry import all_defenses, get_threats
from mlwarden.core.target import sklearn_target
from mlwarden.core.threat import Context
from mlwarden.io.boosters import BoosterScores
from mlwarden.io.estimator_recipe import EstimatorRecipe, Fitted, booster_recipe, recipe_of


@pytest.fixture(scope="module")
def wine():
    from sklearn.datasets import load_wine
    from sklearn.model_selection import train_test_split
    x, y = load_wine(return_X_y=True)
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    return make_dataset("wine", torch.tensor(xtr), torch.tensor(ytr), torch.tensor(xte), torch.tensor(yte))


def fit_in(folder, recipe, data):
    """The recipe's model trained with `folder` as the working directory (where a library writes by default)."""
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        return recipe.fit(data.x_train, data.y_train, 3, seed=0)
    finally:
        os.chdir(cwd)


def accuracy(model, data) -> float:
    return float((model(data.x_test).argmax(1) == data.y_test).float().mean())


def forest_subject(data):
    from sklearn.ensemble import RandomForestClassifier
    est = RandomForestClassifier(n_estimators=10, random_state=3, n_jobs=-1).fit(data.x_train.numpy(),
                                                                                data.y_train.numpy())
    target = sklearn_target(est, data.n_classes, data.input_shape, "forest.joblib")
    return est, Subject(target, data, recipe_of(target), {})


def test_a_forest_is_retrained_as_a_forest_from_a_clone(wine):
    torch.set_num_threads(1)
    est, subject = forest_subject(wine)
    recipe = subject.recipe
    assert isinstance(recipe, EstimatorRecipe) and recipe.name == "RandomForestClassifier"
    model = recipe.fit(wine.x_train, wine.y_train, wine.n_classes, seed=7)
    assert isinstance(model, Fitted) and not isinstance(model, torch.nn.Module)
    fresh = model.model
    assert type(fresh) is type(est) and fresh is not est
    assert fresh.random_state == 7 and fresh.n_jobs == 1 and fresh.n_estimators == 10   # seed, threads, its own
    assert est.random_state == 3                                                        # the user's is untouched
    assert accuracy(model, wine) > 0.85
    # the same seed gives the same model; the model travels to a worker and answers the same there
    again = recipe.fit(wine.x_train, wine.y_train, wine.n_classes, seed=7)
    assert torch.equal(model(wine.x_test), again(wine.x_test))
    assert torch.equal(pickle.loads(pickle.dumps(model))(wine.x_test), model(wine.x_test))
    target = recipe.target_for(model, wine, subject.target.access, "hardened")
    assert target.estimator is fresh and torch.equal(target.scores(wine.x_test), model(wine.x_test))


def test_soft_labels_and_a_data_filter(wine):
    _, subject = forest_subject(wine)
    seen = {}

    def drop_half(x, y):
        seen["n"] = len(y)
        return x[: len(y) // 2], y[: len(y) // 2]
    soft = torch.nn.functional.one_hot(wine.y_train, 3).float()
    model = subject.recipe.with_(data_filter=drop_half).fit(wine.x_train, soft, 3, seed=0)
    assert seen["n"] == len(wine.y_train) and accuracy(model, wine) > 0.7


def test_network_hooks_are_refused(wine):
    _, subject = forest_subject(wine)
    with pytest.raises(UserError, match="retrained as itself"):
        subject.recipe.with_(batch_transform=lambda m, x, y: (x, y))
    with pytest.raises(UserError, match="retrained as itself"):
        subject.recipe.fit(wine.x_train, wine.y_train, 3, wrap=lambda *a: a)


def test_xgboost_retrained_with_its_objective_rounds_and_depth(tmp_path, wine):
    xgboost = pytest.importorskip("xgboost")
    xgboost.XGBClassifier(n_estimators=9, max_depth=2, nthread=1).fit(wine.x_train.numpy(), wine.y_train.numpy()) \
        .save_model(tmp_path / "m.json")
    recipe = booster_recipe(BoosterScores(str(tmp_path / "m.json"), "xgboost", "m.json"))
    params = dict(recipe.params)
    assert recipe.rounds == 9 and params["objective"] == "multi:softprob" and params["num_class"] == "3"
    assert params["max_depth"] == "2"    # read from the trees: the file holds no training parameters
    model = recipe.fit(wine.x_train, wine.y_train, 3, seed=1)
    assert model.model.num_boosted_rounds() == 9 and accuracy(model, wine) > 0.85
    assert torch.equal(pickle.loads(pickle.dumps(model))(wine.x_test), model(wine.x_test))
    back = xgboost.Booster()
    back.load_model(bytearray(model.to_bytes()))   # saved as XGBoost JSON
    assert back.num_boosted_rounds() == 9


def test_a_lightgbm_file_cannot_name_files_for_training(tmp_path, wine):
    """The model text's parameters section names files (data, output_model, forcedsplits_filename...): only
    the fixed list of hyper-parameters reaches lightgbm.train, so none is read or written."""
    lightgbm = pytest.importorskip("lightgbm")
    text = lightgbm.LGBMClassifier(n_estimators=6, num_leaves=5, verbose=-1).fit(
        wine.x_train.numpy(), wine.y_train.numpy()).booster_.model_to_string()
    planted = tmp_path / "planted"
    for key in ("output_model", "forcedsplits_filename", "data", "valid", "input_model"):
        text = text.replace(f"[{key}: ", f"[{key}: {planted}-{key}", 1)
    (tmp_path / "m.txt").write_text(text)
    recipe = booster_recipe(BoosterScores(str(tmp_path / "m.txt"), "lightgbm", "m.txt"))
    assert recipe.rounds == 6 and dict(recipe.params)["num_leaves"] == "5"
    assert not any("planted" in str(v) for _, v in recipe.params)
    model = fit_in(tmp_path, recipe, wine)
    assert accuracy(model, wine) > 0.8
    assert not any(p.name.startswith("planted") for p in tmp_path.iterdir())


def test_network_defences_refuse_before_work_and_sanitizers_accept(wine):
    _, subject = forest_subject(wine)
    usable = []
    for name, d in all_defenses().items():
        if wine.modality not in d.modalities:
            continue
        p = d.params_for("quick")
        try:
            check_applicable(subject, [(d, p)], wine)
        except UserError as e:
            msg = str(e)
            assert "\n" not in msg and msg.startswith(name) and "RandomForestClassifier is retrained as itself" in msg
        else:
            usable.append(name)
    assert usable == ["knn-label-sanitization", "outlier-filter"]


def test_network_threats_skip_and_label_flipping_runs(wine, tmp_path):
    _, subject = forest_subject(wine)
    ctx = Context(target=subject.target, data=wine, evidence_dir=tmp_path, recipe=subject.recipe)
    skip = {t.name: t.skip_reason(ctx) for t in get_threats(["gradient-matching", "label-flipping"])}
    assert skip["gradient-matching"] == "retrains networks; RandomForestClassifier is retrained as itself"
    assert skip["label-flipping"] is None


def test_a_network_or_a_callable_has_no_estimator_recipe(wine):
    from mlwarden.core.target import Access, NumpyTarget, TorchTarget
    assert recipe_of(TorchTarget(torch.nn.Linear(13, 3), 3, (13,))) is None
    assert recipe_of(NumpyTarget(lambda a: np.ones((len(a), 3)) / 3, 3, (13,), Access.SCORES)) is None


def test_the_python_api_retrains_a_forest_as_itself_and_refuses_a_network_recipe(wine, tmp_path):
    from sklearn.ensemble import RandomForestClassifier

    import mlwarden
    est = RandomForestClassifier(n_estimators=10, random_state=0).fit(wine.x_train.numpy(), wine.y_train.numpy())
    data = (wine.x_train, wine.y_train, wine.x_test, wine.y_test)
    with pytest.raises(UserError, match="retrains as itself"):
        mlwarden.harden(est, data, "knn-label-sanitization", recipe="mlp", out=tmp_path / "refused")
    result = mlwarden.harden(est, data, "knn-label-sanitization", out=tmp_path / "h",
                             threat_params={"label-flipping": {"budgets": [0.1], "strategies": ["random"]}})
    saved = result.summary["points"][0]["model"]
    assert saved["format"] == "skops" and saved["kind"] == "RandomForestClassifier"
    import skops.io
    back = skops.io.load(saved["path"], trusted=skops.io.get_untrusted_types(file=saved["path"]))
    assert type(back) is RandomForestClassifier and back is not est


def test_a_booster_file_cannot_ask_for_more_rounds_than_its_trees(tmp_path, wine):
    """A hostile best_iteration (10^9) would make the retraining run for ever: the file is refused when read
    (XGBoost's predict refuses it too); one within range gives the rounds the user's predict uses."""
    xgboost = pytest.importorskip("xgboost")
    b = xgboost.XGBClassifier(n_estimators=4, max_depth=2, nthread=1).fit(
        wine.x_train.numpy(), wine.y_train.numpy()).get_booster()
    b.set_attr(best_iteration="1000000000")
    b.save_model(tmp_path / "m.json")
    with pytest.raises(UserError, match="best_iteration '1000000000' is not one of its 4 rounds"):
        BoosterScores(str(tmp_path / "m.json"), "xgboost", "m.json")
    b.set_attr(best_iteration="1")
    b.save_model(tmp_path / "m.json")
    recipe = booster_recipe(BoosterScores(str(tmp_path / "m.json"), "xgboost", "m.json"))
    assert recipe.rounds == 2
    assert recipe.fit(wine.x_train, wine.y_train, 3, seed=0).model.num_boosted_rounds() == 2


def catboost_file(path, data, **kw):
    catboost = pytest.importorskip("catboost")
    model = catboost.CatBoostClassifier(thread_count=1, verbose=0, allow_writing_files=False, **kw)
    model.fit(data.x_train.numpy(), data.y_train.numpy()).save_model(str(path), format="json" if
                                                                      path.suffix == ".json" else "cbm")
    return path


def test_catboost_retrained_with_its_loss_depth_and_iterations(tmp_path, wine):
    from mlwarden.io.catboost_files import CatBoostScores, catboost_target
    path = catboost_file(tmp_path / "m.cbm", wine, iterations=12, depth=3, learning_rate=0.3, l2_leaf_reg=5)
    recipe = recipe_of(catboost_target(str(path), "m.cbm", wine))
    params = dict(recipe.params)
    assert recipe.library == "catboost" and recipe.rounds == 12
    assert params["depth"] == 3 and params["loss_function"] == "MultiClass" and params["l2_leaf_reg"] == 5
    assert params["learning_rate"] == pytest.approx(0.3)
    model = recipe.fit(wine.x_train, wine.y_train, 3, seed=1)
    assert model.model.tree_count_ == 12
    import catboost
    got = catboost.CatBoost().load_model(blob=model.to_bytes()).get_all_params()   # the .cbm it saves
    assert got["depth"] == 3 and got["loss_function"] == "MultiClass" and got["iterations"] == 12
    assert max(len(t["splits"]) for t in model.scores._doc["oblivious_trees"]) == 3
    assert accuracy(model, wine) > 0.85
    assert torch.equal(pickle.loads(pickle.dumps(model))(wine.x_test), model(wine.x_test))
    saved = model.to_bytes()
    assert saved[:4] == b"CBM1"   # saved as CatBoost's .cbm, read back through the checked loader
    back = CatBoostScores(saved, "back.cbm")
    assert back.loss == "MultiClass" and len(back._doc["oblivious_trees"]) == 12
    assert np.allclose(back(wine.x_test.numpy()), model(wine.x_test).numpy(), atol=1e-5)


def test_a_catboost_file_cannot_make_retraining_write_files_or_run_for_ever(tmp_path, wine):
    """A CatBoost JSON's model_info.params is free text to an attacker: train_dir, a billion iterations, a
    depth the trees do not have, out-of-range options. Only checked options are read; the iterations are the
    trees the file holds and the depth their splits; nothing is written."""
    import json

    from mlwarden.io.catboost_files import catboost_target
    path = catboost_file(tmp_path / "m.json", wine, iterations=5, depth=2)
    doc = json.loads(path.read_text())
    p = doc["model_info"]["params"]
    planted = str(tmp_path / "planted")
    p["flat_params"] = {"train_dir": planted, "iterations": 10 ** 9, "snapshot_file": planted + "-snap"}
    p["system_options"] = {"thread_count": 10 ** 6}
    p["boosting_options"].update(iterations=10 ** 9, learning_rate=1e308)
    p["tree_learner_options"].update(depth=99, l2_leaf_reg=-1, leaf_estimation_iterations=10 ** 6,
                                     bootstrap={"type": planted, "bagging_temperature": "x"})
    p["data_processing_options"]["float_features_binarization"]["border_count"] = 10 ** 9
    p["train_dir"] = planted
    path.write_text(json.dumps(doc))
    recipe = recipe_of(catboost_target(str(path), "m.json", wine))
    params = dict(recipe.params)
    assert recipe.rounds == 5 and params["depth"] == 2
    assert not {"learning_rate", "l2_leaf_reg", "leaf_estimation_iterations", "bootstrap_type", "border_count",
                "bagging_temperature", "train_dir", "thread_count", "iterations"} & set(params)
    assert not any("planted" in str(v) for v in params.values())
    before = sorted(tmp_path.iterdir())
    model = fit_in(tmp_path, recipe, wine)
    assert model.model.tree_count_ == 5 and accuracy(model, wine) > 0.8
    assert sorted(tmp_path.iterdir()) == before   # no catboost_info, no planted train_dir
