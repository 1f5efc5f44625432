"""XGBoost and LightGBM models in their own files (XGBoost JSON or UBJSON, LightGBM text) as score targets.

Each file is parsed by its library's own reader (`xgboost.Booster().load_model`, `lightgbm.Booster(
model_str=...)`), never unpickled: the formats hold trees and numbers, no code (io/scan/formats.py
`booster_kind` recognises them by content). The target answers class probabilities, as the user's
`predict_proba` would: a binary booster's P(class 1) becomes two columns, a multiclass booster's n columns.
"""
from __future__ import annotations

import json
import re

import numpy as np

from ..core.data import Dataset
from ..core.errors import UserError
from ..core.extras import require
from ..core.target import Access, NumpyTarget, Target

LIBRARY = {"xgboost": "XGBoost", "lightgbm": "LightGBM"}
# objective -> what predict's transformed output is: "p1" (P(class 1)), "probs" (one column per class),
# "ova" (one independent probability per class), "margins" (softmax them), "labels"
_XGB_OUTPUT = {"binary:logistic": "p1", "binary:logitraw": "margins-binary", "multi:softprob": "probs",
               "multi:softmax": "margins", "binary:hinge": "labels"}
_LGB_OUTPUT = {"binary": "p1", "cross_entropy": "p1", "xentropy": "p1", "multiclass": "probs", "softmax": "probs",
               "multiclassova": "ova", "multiclass_ova": "ova", "ova": "ova", "ovr": "ova"}


class BoosterScores:
    """A booster as a function of numpy rows, predicting with the calling process's torch thread count (the
    runner's thread policy). Opened from the model file by the library's own reader; it travels to a
    backend's worker as the model the library writes back (UBJSON or text), never as a pickled booster."""

    def __init__(self, source: str | bytes, library: str, name: str):
        self.source, self.library, self.name = source, library, name
        self._open()

    def __getstate__(self):
        raw = (bytes(self._booster.save_raw("ubj")) if self.library == "xgboost"
               else self._booster.model_to_string().encode())
        return {"source": raw, "library": self.library, "name": self.name}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._open()

    def _open(self):
        lib = require(self.library, "trees", f"loading a {LIBRARY[self.library]} model")
        src = self.source if isinstance(self.source, str) else bytearray(self.source)
        try:
            if self.library == "xgboost":
                self._booster = lib.Booster()
                self._booster.load_model(src)
                self.objective, self.n_classes = _xgb_objective(self._booster)
                self.n_features = self._booster.num_features()
                best = self._booster.attr("best_iteration")   # what the user's predict uses after early stopping
                self._rounds = (0, int(best) + 1) if best is not None else (0, 0)
            else:
                self._booster = (lib.Booster(model_file=src) if isinstance(src, str)
                                 else lib.Booster(model_str=src.decode("utf-8")))
                self.objective, self.n_classes = _lgb_objective(self._booster.model_to_string())
                self.n_features = self._booster.num_feature()
        except Exception as e:  # noqa: BLE001 - the library rejecting a malformed file is one line
            # the library's first line, without XGBoost's "[time] source.cc:line:" prefix or its stack trace
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            msg = re.sub(r"^\[[\d:]+\]\s+\S+:\d+:\s*", "", first)[:200]
            raise UserError(f"{self.name}: not a loadable {LIBRARY[self.library]} model ({msg})") from None
        table = _XGB_OUTPUT if self.library == "xgboost" else _LGB_OUTPUT
        if self.objective not in table:
            raise UserError(f"{self.name}: a {LIBRARY[self.library]} model with objective '{self.objective}'; "
                            f"mlwarden audits classifiers ({', '.join(table)})")
        self.output = table[self.objective]

    @property
    def access(self) -> Access:
        return Access.LABELS if self.output == "labels" else Access.SCORES

    def __call__(self, a: np.ndarray) -> np.ndarray:
        import torch
        a = a.reshape(a.shape[0], -1)
        threads = torch.get_num_threads()
        if self.library == "xgboost":
            self._booster.set_param({"nthread": threads})
            margin = self.output.startswith("margins")
            out = self._booster.inplace_predict(a, iteration_range=self._rounds,
                                                predict_type="margin" if margin else "value")
        else:
            out = self._booster.predict(a, num_threads=threads)
        return as_probabilities(np.asarray(out, dtype=np.float64), self.output).astype(np.float32)


def as_probabilities(out: np.ndarray, output: str) -> np.ndarray:
    """A booster's transformed output as (n, n_classes) probabilities (labels stay labels)."""
    if output == "labels":
        return out.reshape(-1).astype(np.int64)
    if output == "margins-binary":
        out, output = np.stack([np.zeros_like(out.reshape(-1)), out.reshape(-1)], 1), "margins"
    if output == "margins":
        e = np.exp(out - out.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)
    if output == "p1":
        p = np.clip(out.reshape(-1), 0.0, 1.0)
        return np.stack([1 - p, p], 1)
    if output == "ova":
        return out / np.maximum(out.sum(1, keepdims=True), 1e-12)
    return out


def _xgb_objective(booster) -> tuple[str, int]:
    learner = json.loads(booster.save_config())["learner"]
    objective = learner["objective"]["name"]
    n = int(learner["learner_model_param"].get("num_class", "0"))
    return objective, max(n, 2)


def _lgb_objective(text: str) -> tuple[str, int]:
    """From the model text's header, which comes before the first tree."""
    head = text[:text.find("\nTree=")]
    objective = re.search(r"^objective=(\S+)", head, re.MULTILINE)
    n = re.search(r"^num_class=(\d+)", head, re.MULTILINE)
    return (objective.group(1) if objective else "unknown"), max(int(n.group(1)) if n else 1, 2)


def booster_target(path: str, library: str, name: str, data: Dataset) -> Target:
    """The booster in the file at `path` as a target for `data`, whose feature count it must take."""
    fn = BoosterScores(path, library, name)
    width = int(np.prod(data.input_shape))
    if fn.n_features != width:
        raise UserError(f"{name}: the {LIBRARY[library]} model takes {fn.n_features} features, the data has {width}")
    return NumpyTarget(fn, fn.n_classes, data.input_shape, fn.access, name, library)
