"""How to train a fresh model like a scikit-learn estimator or a gradient-boosted booster: the model itself,
retrained. A random forest is retrained as a random forest, never swapped for a network.

The recipe keeps the parts of core.recipe.Recipe that make sense without a network (`fit`, `target_for`,
`with_`, `describe`, the `data_filter` sanitizer hook, the `inference` wrappers) and none of the network
hooks (`wrap`, `batch_transform`, `loss`, `on_epoch`, `repair`): a defence that needs those refuses it
(core/defense.py `check_applicable`), and a threat that needs a network skips it (core/threat.py).

- scikit-learn: `sklearn.base.clone(estimator)` (the estimator's own hyper-parameters, no fitted state; the
  scikit-learn contract, https://scikit-learn.org/stable/developers/develop.html#cloning), every
  `random_state` set from the seed and every `n_jobs` to the torch thread count, fitted on flattened float
  rows.
- XGBoost: `xgboost.train` with the hyper-parameters the loaded booster reports in `Booster.save_config()`
  (the learner's objective and num_class, the tree booster's training parameters) and as many boosting
  rounds as it has (https://xgboost.readthedocs.io/en/stable/tutorials/saving_model.html).
- LightGBM: `lightgbm.train` with the training parameters of the model text's `parameters:` section (a fixed
  list of hyper-parameters: the section also names files, which are never passed on) and its number of
  iterations (https://lightgbm.readthedocs.io/en/stable/Parameters.html).
- CatBoost: `CatBoostClassifier` with the checked model's loss, depth (its oblivious trees' splits) and
  iterations (its number of trees), and the training options its JSON records that pass their checks
  (io/catboost_files.py `training_params`; never train_dir or any other file name): no file written
  (allow_writing_files=False), https://catboost.ai/en/docs/references/training-parameters/.

A trained model (`Fitted`) is a function of torch inputs returning class probabilities, as threats call a
network; it travels to a backend's workers as the estimator or as the booster's own bytes (io/boosters.py
`BoosterScores`, `RetrainedCatBoost`), and saves in the user's format: `.skops` (skops.io, no pickle), XGBoost
`.json`, LightGBM `.txt`, CatBoost `.cbm`."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np
import torch

from ..core.errors import UserError
from ..core.files import ModelFiles
from ..core.target import Access, NumpyTarget, Target, sklearn_target
from .boosters import LIBRARY, BoosterScores
from .catboost_files import CatBoostScores

SUFFIX = {"sklearn": ".skops", "xgboost": ".json", "lightgbm": ".txt", "catboost": ".cbm"}
FORMAT = {"sklearn": "skops", "xgboost": "xgboost", "lightgbm": "lightgbm", "catboost": "catboost"}
# LightGBM's training hyper-parameters: the model text's parameters section also holds file names (data,
# output_model, forcedsplits_filename, ...), which must never reach lightgbm.train
_LGB_TRAIN = ("boosting", "objective", "num_class", "learning_rate", "num_leaves", "max_depth", "min_data_in_leaf",
              "min_sum_hessian_in_leaf", "bagging_fraction", "pos_bagging_fraction", "neg_bagging_fraction",
              "bagging_freq", "feature_fraction", "feature_fraction_bynode", "extra_trees", "max_delta_step",
              "lambda_l1", "lambda_l2", "min_gain_to_split", "drop_rate", "max_drop", "skip_drop",
              "xgboost_dart_mode", "uniform_drop", "top_rate", "other_rate", "path_smooth", "max_bin",
              "min_data_in_bin", "is_unbalance", "scale_pos_weight", "sigmoid", "boost_from_average",
              "data_sample_strategy")
_LGB_BOOL = ("extra_trees", "is_unbalance", "boost_from_average", "xgboost_dart_mode", "uniform_drop")
# XGBoost: the learner's and the tree booster's training parameters that shape the model
_XGB_TREE = ("eta", "gamma", "max_depth", "min_child_weight", "max_delta_step", "subsample", "sampling_method",
             "colsample_bytree", "colsample_bylevel", "colsample_bynode", "lambda", "alpha", "grow_policy",
             "max_leaves", "max_bin")


def estimator_name(estimator) -> str:
    """'StandardScaler + RandomForestClassifier' for a pipeline, the class name otherwise."""
    steps = getattr(estimator, "steps", None)
    return " + ".join(type(s).__name__ for _, s in steps) if steps else type(estimator).__name__


class EstimatorScores:
    """A fitted scikit-learn estimator as a function of numpy rows -> (n, n_classes) probabilities."""

    def __init__(self, estimator, n_classes: int):
        self.estimator, self.n_classes = estimator, n_classes

    def __call__(self, a: np.ndarray) -> np.ndarray:
        return sklearn_target(self.estimator, self.n_classes, a.shape[1:], "estimator").fn(a)


@dataclass
class Fitted:
    """A model the recipe trained: called on a torch batch it returns class probabilities (what threats read
    from a network's output); `target_for` makes it a Target; `to_bytes` saves it in its library's format."""
    scores: Callable[[np.ndarray], np.ndarray]   # EstimatorScores, io/boosters.py BoosterScores, RetrainedCatBoost
    library: str                                 # "sklearn", "xgboost", "lightgbm" or "catboost"
    name: str
    n_classes: int

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        a = x.detach().cpu().reshape(len(x), -1).numpy().astype(np.float32)
        return torch.from_numpy(np.ascontiguousarray(self.scores(a), dtype=np.float32))

    def eval(self) -> "Fitted":   # called as a network would be; nothing to switch
        return self

    @property
    def model(self):
        """The scikit-learn estimator, or the library's booster (CatBoost: its model)."""
        if self.library == "catboost":
            return self.scores._model
        return self.scores.estimator if self.library == "sklearn" else self.scores._booster

    def to_bytes(self) -> bytes:
        if self.library == "sklearn":
            from ..core.extras import require
            require("skops", "sklearn", "saving a scikit-learn model")
            import skops.io
            return skops.io.dumps(self.model)
        if self.library == "xgboost":
            return bytes(self.model.save_raw("json"))
        if self.library == "catboost":
            return self.scores.cbm
        return self.model.model_to_string().encode()


@dataclass
class EstimatorRecipe:
    """Retrains the user's own model: a clone of a scikit-learn estimator, or a booster with its own
    hyper-parameters. `as_itself` marks it for the defences and threats that need a network."""
    name: str
    library: str                          # "sklearn", "xgboost", "lightgbm" or "catboost"
    estimator: Any = None                 # scikit-learn: the estimator cloned for every fit
    params: tuple = ()                    # boosters: (key, value) training parameters
    rounds: int = 0                       # boosters: boosting rounds
    data_filter: Callable | None = None   # (x, y) -> (x, y), once before training (sanitizers)
    inference: Callable | None = None     # Target -> Target: inference defences in front of each model
    as_itself = True
    # the network hooks of core.recipe.Recipe, always None here (code that checks them reads None)
    wrap = batch_transform = loss = on_epoch = repair = None

    @property
    def model_kind(self) -> str:
        """What it trains, for messages: 'RandomForestClassifier', 'XGBoost booster'."""
        if self.library == "catboost":
            return "CatBoost model"
        return estimator_name(self.estimator) if self.library == "sklearn" else f"{LIBRARY[self.library]} booster"

    def with_(self, **changes) -> "EstimatorRecipe":
        bad = sorted(k for k, v in changes.items() if v is not None and k in ("wrap", "batch_transform", "loss",
                                                                              "on_epoch", "repair"))
        if bad:
            raise UserError(f"{', '.join(bad)} changes how a network trains; {self.model_kind} is retrained as "
                            "itself")
        changes = {k: v for k, v in changes.items() if k in self.__dataclass_fields__}
        return replace(self, **changes)

    def describe(self) -> dict:
        what = ({"estimator": repr(self.estimator)} if self.library == "sklearn"
                else {"params": dict(self.params), "rounds": self.rounds})
        return {"name": self.name, "library": self.library, **what,
                "data_filter": repr(self.data_filter) if self.data_filter is not None else None,
                **({"inference": repr(self.inference)} if self.inference is not None else {})}

    def fit(self, x: torch.Tensor, y: torch.Tensor, n_classes: int, *, seed: int = 0, **network_hooks) -> Fitted:
        """The model retrained on (x, y); soft labels (an extraction copy's) train on their argmax."""
        if any(v is not None for v in network_hooks.values()):
            raise UserError(f"{', '.join(k for k, v in network_hooks.items() if v is not None)} changes how a "
                            f"network trains; {self.model_kind} is retrained as itself")
        if self.data_filter is not None:
            x, y = self.data_filter(x, y)
        a = x.detach().cpu().reshape(len(x), -1).numpy().astype(np.float32)
        labels = (y.argmax(1) if y.ndim == 2 else y).detach().cpu().numpy().astype(np.int64)
        threads = max(torch.get_num_threads(), 1)
        if self.library == "sklearn":
            return Fitted(EstimatorScores(_fit_sklearn(self.estimator, a, labels, seed, threads), n_classes),
                          "sklearn", self.name, n_classes)
        if self.library == "catboost":
            return Fitted(_fit_catboost(dict(self.params), self.rounds, a, labels, seed, threads, n_classes,
                                        self.name), "catboost", self.name, n_classes)
        raw = (_fit_xgboost(dict(self.params), self.rounds, a, labels, seed, threads) if self.library == "xgboost"
               else _fit_lightgbm(dict(self.params), self.rounds, a, labels, seed, threads))
        return Fitted(BoosterScores(raw, self.library, self.name), self.library, self.name, n_classes)

    def target_for(self, model: Fitted, data, access: Access, name: str) -> Target:
        access = access if access in (Access.SCORES, Access.LABELS) else Access.SCORES
        target = NumpyTarget(model.scores, data.n_classes, data.input_shape, access, name, self.library)
        if self.library == "sklearn":
            target.estimator = model.model
        return target


def _fit_sklearn(estimator, a: np.ndarray, labels: np.ndarray, seed: int, threads: int):
    from sklearn.base import clone
    est = clone(estimator)
    names = est.get_params(deep=True)
    est.set_params(**{k: seed for k in names if k == "random_state" or k.endswith("__random_state")},
                   **{k: threads for k in names if (k == "n_jobs" or k.endswith("__n_jobs"))})
    return est.fit(a, labels)


def _fit_xgboost(params: dict, rounds: int, a, labels, seed: int, threads: int) -> bytes:
    import xgboost
    params = {**params, "seed": seed, "nthread": threads}
    if params.get("objective", "").startswith("multi:"):
        params["num_class"] = max(int(params.get("num_class", 2)), int(labels.max()) + 1)
    booster = xgboost.train(params, xgboost.DMatrix(a, label=labels), num_boost_round=rounds)
    return bytes(booster.save_raw("ubj"))


def _fit_lightgbm(params: dict, rounds: int, a, labels, seed: int, threads: int) -> bytes:
    import lightgbm
    params = {**params, "seed": seed, "num_threads": threads, "verbosity": -1}
    booster = lightgbm.train(params, lightgbm.Dataset(a, label=labels), num_boost_round=rounds)
    return booster.model_to_string().encode()


class RetrainedCatBoost(CatBoostScores):
    """A CatBoost model the recipe trained: scored as any CatBoost target (its JSON checked and loaded by
    io/catboost_files.py), travelling to workers as that JSON and its `.cbm` bytes (what `to_bytes` saves)."""

    def __init__(self, json_bytes: bytes, cbm: bytes, name: str):
        self.cbm = cbm
        super().__init__(json_bytes, name)

    def __getstate__(self):   # the JSON CatBoost wrote (checked again on arrival), with its class names
        return {"source": self.source, "name": self.name, "cbm": self.cbm}


def _fit_catboost(params: dict, rounds: int, a, labels, seed: int, threads: int, n_classes: int,
                  name: str) -> RetrainedCatBoost:
    from ..core.extras import require
    catboost = require("catboost", "trees", "retraining a CatBoost model")
    import os
    loss = params.get("loss_function")
    # every class column kept when a class is missing from the labels (a reference model's half of the pool);
    # CrossEntropy takes probabilities as its target, and no class names
    names = {} if loss == "CrossEntropy" else {
        "class_names": list(range(max(n_classes, 2) if loss == "MultiClass" else 2))}
    model = catboost.CatBoostClassifier(**params, **names, iterations=rounds, random_seed=seed, thread_count=threads,
                                        allow_writing_files=False, verbose=0)
    try:
        model.fit(a, labels.astype(np.float32) if loss == "CrossEntropy" else labels)
    except catboost.CatBoostError as e:
        first = re.sub(r"^\S+\.(?:cpp|h):\d+:\s*", "", (str(e).strip().splitlines() or ["no message"])[0])
        raise UserError(f"{name}: CatBoost could not retrain it on this data ({first[:200]})") from None
    fd = os.memfd_create("catboost-retrained.json")   # CatBoost writes JSON only to a path: a memory file
    try:
        model.save_model(f"/proc/self/fd/{fd}", format="json")
        os.lseek(fd, 0, os.SEEK_SET)
        with os.fdopen(os.dup(fd), "rb") as f:
            text = f.read()
    finally:
        os.close(fd)
    return RetrainedCatBoost(text, bytes(model._serialize_model()), name)


def catboost_recipe(scores: CatBoostScores) -> EstimatorRecipe:
    """The checked model's loss, depth and number of trees (what its file holds: a recorded `iterations`
    cannot raise it) and the training options it records that pass their checks."""
    trees = scores._doc["oblivious_trees"]
    depth = max(len(t["splits"]) for t in trees)
    params = {**dict(getattr(scores, "train", ())), "loss_function": scores.loss, "depth": max(depth, 1)}
    rate = params.get("learning_rate")
    title = (f"CatBoost {scores.loss}, {len(trees)} iterations, depth {params['depth']}, learning rate "
             f"{'CatBoost default' if rate is None else f'{rate:.6g}'}")
    return EstimatorRecipe(title, "catboost", params=tuple(sorted(params.items())), rounds=len(trees))


def estimator_recipe(estimator) -> EstimatorRecipe:
    return EstimatorRecipe(estimator_name(estimator), "sklearn", estimator=estimator)


def booster_recipe(scores: BoosterScores) -> EstimatorRecipe:
    """The training parameters the loaded booster reports, and its number of boosting rounds."""
    booster = scores._booster
    if scores.library == "xgboost":
        learner = json.loads(booster.save_config())["learner"]
        gb = learner["gradient_booster"]
        tree = {**gb.get("tree_train_param", {}), **gb.get("gbtree_train_param", {})}
        params = {k: tree[k] for k in _XGB_TREE if tree.get(k) not in (None, "")}
        params["objective"] = learner["objective"]["name"]
        params["booster"] = learner.get("learner_train_param", {}).get("booster", "gbtree")
        n_par = gb.get("gbtree_model_param", {}).get("num_parallel_tree", "1")
        if n_par not in ("1", ""):
            params["num_parallel_tree"] = n_par
        n_class = int(learner["learner_model_param"].get("num_class", "0"))
        if n_class > 1:
            params["num_class"] = str(n_class)
        best = booster.attr("best_iteration")
        rounds = booster.num_boosted_rounds()   # what its trees hold: a file's best_iteration cannot raise it
        if best is not None and str(best).isdigit():
            rounds = min(rounds, int(best) + 1)
        # a model file keeps its trees, not its training parameters (save_config of a loaded booster reads
        # XGBoost's defaults): the depth is read from the trees; the rest are the library's defaults
        params["max_depth"] = str(max(_xgb_depths(booster), default=1))
        params.pop("max_leaves", None)
        title = (f"XGBoost {params['objective']}, {rounds} rounds, max_depth {params['max_depth']} (read from its "
                 "trees; the learning rate and sampling are XGBoost's defaults, which a model file does not record)")
    else:
        text = booster.model_to_string()
        section = text[text.find("\nparameters:"):text.find("end of parameters")] if "\nparameters:" in text else ""
        found = dict(re.findall(r"^\[(\w+): ([^\]\n]*)\]", section, re.MULTILINE))
        params = {k: found[k] for k in _LGB_TRAIN if found.get(k, "") != ""}
        params.update({k: "true" if params[k] == "1" else "false" for k in _LGB_BOOL if k in params})   # 0/1 there
        params.setdefault("objective", scores.objective)
        if scores.n_classes > 2 or scores.output in ("probs", "ova"):
            params.setdefault("num_class", str(scores.n_classes))
        rounds = booster.current_iteration()
        title = f"LightGBM {params['objective']}, {rounds} rounds, {params.get('num_leaves', '?')} leaves"
    if rounds < 1:
        raise UserError(f"{scores.name}: the {LIBRARY[scores.library]} model has no trees to learn its training from")
    return EstimatorRecipe(title, scores.library, params=tuple(sorted(params.items())), rounds=rounds)


def _xgb_depths(booster) -> list[int]:
    """The depth of every tree of an XGBoost booster, from its JSON model (children arrays; -1 is a leaf)."""
    trees = json.loads(bytes(booster.save_raw("json")))["learner"]["gradient_booster"]["model"]["trees"]
    out = []
    for t in trees:
        left, right, depth, stack = t["left_children"], t["right_children"], 0, [(0, 0)]
        while stack:
            i, d = stack.pop()
            depth = max(depth, d)
            if left[i] != -1:
                stack += [(left[i], d + 1), (right[i], d + 1)]
        out.append(depth)
    return out


def recipe_of(target: Target) -> EstimatorRecipe | None:
    """How to retrain this target as itself: a scikit-learn estimator's clone, or a booster's own training;
    None for any other target."""
    estimator = getattr(target, "estimator", None)
    if estimator is not None and hasattr(estimator, "fit"):
        return estimator_recipe(estimator)
    fn = getattr(target, "fn", None)
    if isinstance(fn, BoosterScores):
        return booster_recipe(fn)
    if isinstance(fn, CatBoostScores):
        return catboost_recipe(fn)
    return None


_MODEL_FLAGS = {"--model": 1, "--allow-pickle": 0, "--format": 1, "--trust": 1, "--factory": 1, "--arch": 1,
                "--recipe": 1}


def save_fitted(model: Fitted, base, subject, defenses: list[str], run) -> dict:
    """Save a hardened model retrained as itself next to `base` in its library's format (save_files)."""
    from pathlib import Path
    base = Path(base)
    name = f"{base.name}{SUFFIX[model.library]}"
    kind = subject.recipe.model_kind if hasattr(subject.recipe, "model_kind") else model.name
    return save_files(ModelFiles(name, FORMAT[model.library], {name: model.to_bytes()}), base.parent, subject,
                      kind, defenses, run)


def save_files(saved: ModelFiles, folder, subject, kind: str, defenses: list[str], run, *,
               serve: bool = True) -> dict:
    """Write a hardened model retrained as itself (its files, in its own format) into `folder` of the run
    directory, every file through the run's checked write (all checked before the first is written), and say
    how to load it: the audit command with the subject's data flags (its `info["cli"]`), the serve command
    where `mlwarden serve` takes the model (`serve`), and what the before/after compares."""
    import shlex
    from pathlib import Path
    folder = Path(folder)
    for rel in saved.files:
        run.check_write(folder / rel)
    for rel, data in saved.files.items():
        run.write(folder / rel, data)
    out = folder / saved.path
    words, rest = shlex.split(subject.info.get("cli", "")), []
    while words:
        w = words.pop(0)
        if w in _MODEL_FLAGS:
            del words[:_MODEL_FLAGS[w]]
        else:
            rest.append(w)
    data = " ".join(shlex.quote(w) for w in rest)
    shape = ",".join(str(d) for d in subject.data.input_shape)
    return {"path": str(out), "format": saved.format, "kind": kind,
            "compared": f"before: {subject.target.name} as given; after: {kind} retrained as itself on the training "
                        f"data {' + '.join(defenses)} sanitized",
            "audit": f"mlwarden audit --model {shlex.quote(str(out))} {data}".strip(),
            "serve": f"mlwarden serve {shlex.quote(str(out))} --input-shape {shape}" if serve else None}
