"""CatBoost classifiers in their own files (CatBoost's binary `.cbm`, the default of `save_model`, and its JSON
export, `save_model(path, format="json")`) as score targets. Never unpickled.

What is trusted, and why. Both readers are CatBoost's C++: the `.cbm` one walks a flatbuffers table
(`catboost/libs/model/flatbuffers/model.fbs`: "CBM1", a little-endian uint32 size, the TModelCore buffer,
then optional CTR data) and the JSON one indexes arrays by numbers it reads (`split_index`). So:

- JSON: parsed in Python, checked (`check_model`: oblivious trees of float splits only; every split's
  feature, border and `split_index` consistent with `features_info`; `leaf_values` holding 2^depth x
  dimension numbers; bounded tree count, depth, feature and class counts; a known classification loss), then
  rebuilt from the checked fields alone (no duplicate key for the C++ parser to read differently, no field
  nobody checked: a `class_to_label` entry of 10^9 segfaults CatBoost 1.2.10's JSON reader) and only that is
  given to CatBoost.
- `.cbm`: its layout is checked here (magic, declared size within the file), then one short-lived child
  process, under memory, CPU-time and file-size limits, lets CatBoost read it and write it back as JSON; the
  parent checks that JSON as above and loads it. A crash, abort, hang or allocation storm of the native
  reader ends the child, never the audit: it becomes one line. The child is a crash boundary, not a sandbox
  against a working exploit of CatBoost's reader (no seccomp): scanning an untrusted `.cbm` is still
  running CatBoost's parser on it.

The target answers class probabilities as the user's `predict_proba` would (Logloss / CrossEntropy: two
columns, MultiClass: one per class) and travels to a backend's worker as the checked JSON bytes.
Oblivious trees (Prokhorenkova et al. 2018, "CatBoost: unbiased boosting with categorical features") have one
split per level; `ensemble` writes each as a full binary tree for the tree-ensemble attacks (io/tree_ensemble.py).
"""
from __future__ import annotations

import json
import math
import os
import re
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from ..core.data import MAX_CLASSES, Dataset
from ..core.errors import UserError
from ..core.extras import require
from ..core.target import Access, NumpyTarget, Target

MAGIC = b"CBM1"
LOSSES = {"Logloss": "p1", "CrossEntropy": "p1", "MultiClass": "probs"}
MAX_DEPTH = 16              # CatBoost's own limit for oblivious trees
MAX_TREES = 1 << 20
MAX_LEAF_VALUES = 1 << 26   # summed 2^depth x dimension over the trees (512 MiB as float64)
MAX_FEATURES = 1 << 20
MAX_BORDERS = 65535        # CatBoost's own limit on border_count per float feature
MAX_FILE = 2 << 30
CHILD_MEMORY = 4 << 30      # address space of the converting child (CatBoost's library maps ~1 GiB)
CHILD_CPU_S = 60
_TOP_KEYS = {"features_info", "model_info", "oblivious_trees", "scale_and_bias"}
_NAN_MODES = {"AsIs", "AsFalse", "AsTrue"}


def _bad(name: str, why: str) -> UserError:
    return UserError(f"{name}: not a loadable CatBoost model ({why})")


def _int(v, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v < hi


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True)
class CheckedModel:
    loss: str
    n_classes: int
    n_features: int
    doc: dict   # rebuilt from the checked fields only: what CatBoost reads


def check_model(doc, name: str) -> CheckedModel:
    """A CatBoost JSON model checked and rebuilt from the fields prediction needs (anything else, such as
    `class_params`, whose `class_to_label` CatBoost 1.2.10 indexes unchecked, is left out), or a UserError
    saying what is wrong with it."""
    if not isinstance(doc, dict):
        raise _bad(name, "JSON is not an object")
    if "trees" in doc:
        raise UserError(f"{name}: a CatBoost model with non-symmetric trees (grow_policy Depthwise or Lossguide); "
                        "mlwarden audits oblivious (SymmetricTree) models")
    feats = doc.get("features_info")
    if not isinstance(feats, dict):
        raise _bad(name, "no features_info")
    other = sorted(k for k, v in feats.items() if k != "float_features" and v)
    if other or "ctr_data" in doc:
        raise UserError(f"{name}: a CatBoost model with {', '.join(other) or 'ctr_data'}; mlwarden audits models of "
                        "float features only (the target takes rows of numbers)")
    if set(doc) - _TOP_KEYS:
        raise _bad(name, f"unexpected keys {sorted(set(doc) - _TOP_KEYS)[:4]}")
    loss, n_classes = _loss(doc.get("model_info"), name)
    floats = feats.get("float_features")
    if not isinstance(floats, list) or not floats or len(floats) > MAX_FEATURES:
        raise _bad(name, "features_info.float_features is not a non-empty list")
    offsets, borders, n_features = [], [], len(floats)   # float features only: flat index = float index
    for i, f in enumerate(floats):
        b = f.get("borders", []) if isinstance(f, dict) else None
        if not (isinstance(f, dict) and f.get("feature_index") == i and f.get("flat_feature_index") == i
                and isinstance(b, list) and len(b) <= MAX_BORDERS and all(map(_finite, b))
                and all(x < y for x, y in pairwise(b))
                and f.get("nan_value_treatment", "AsIs") in _NAN_MODES and isinstance(f.get("has_nans", False), bool)):
            raise _bad(name, f"float feature {i}: index, borders (finite, increasing, at most {MAX_BORDERS}) or "
                             "nan_value_treatment")
        offsets.append(offsets[-1] + len(borders[-1]) if borders else 0)
        borders.append(b)
    # each split's border by value in one look-up (a list search per split was borders x splits: a 53 MB file
    # of 300k borders and 300k one-split trees kept the check busy for hours)
    position = [{x: j for j, x in enumerate(b)} for b in borders]
    trees = doc.get("oblivious_trees")
    if not isinstance(trees, list) or not trees or len(trees) > MAX_TREES:
        raise _bad(name, f"oblivious_trees must be a list of 1 to {MAX_TREES} trees")
    dims, total = 1 if loss != "MultiClass" else n_classes, 0
    for k, t in enumerate(trees):
        splits = t.get("splits") if isinstance(t, dict) else None
        if not isinstance(splits, list) or len(splits) > MAX_DEPTH:
            raise _bad(name, f"tree {k}: splits must be a list of at most {MAX_DEPTH} (the depth)")
        for s in splits:
            if not isinstance(s, dict) or s.get("split_type") != "FloatFeature":
                kind = s.get("split_type") if isinstance(s, dict) else s
                raise UserError(f"{name}: a CatBoost model with a {str(kind)[:40]} split; mlwarden audits float "
                                "feature splits only")
            f, border = s.get("float_feature_index"), s.get("border")
            if not _int(f, 0, len(floats)) or not _finite(border) or border not in position[f]:
                raise _bad(name, f"tree {k}: a split on float feature {str(f)[:20]} at a border it does not have "
                                 f"(the model has {len(floats)} float features)")
            if s.get("split_index") != offsets[f] + position[f][border]:
                raise _bad(name, f"tree {k}: split_index {str(s.get('split_index'))[:20]} does not match its border")
        leaves = 1 << len(splits)
        values, weights = t.get("leaf_values"), t.get("leaf_weights", [0] * leaves)
        if not isinstance(values, list) or len(values) != leaves * dims or not all(map(_finite, values)):
            raise _bad(name, f"tree {k}: leaf_values must hold 2^{len(splits)} x {dims} finite numbers, it holds "
                             f"{len(values) if isinstance(values, list) else 'no list'}")
        if not isinstance(weights, list) or len(weights) != leaves or not all(map(_finite, weights)):
            raise _bad(name, f"tree {k}: leaf_weights must hold 2^{len(splits)} numbers")
        total += len(values)
        if total > MAX_LEAF_VALUES:
            raise _bad(name, f"more than {MAX_LEAF_VALUES} leaf values in all")
    sb = doc.get("scale_and_bias", [1, [0] * dims])
    if not (isinstance(sb, list) and len(sb) == 2 and _finite(sb[0]) and isinstance(sb[1], list)
            and len(sb[1]) == dims and all(map(_finite, sb[1]))):
        raise _bad(name, f"scale_and_bias must be [scale, [{dims} biases]]")
    split_keys = ("border", "float_feature_index", "split_index", "split_type")
    rebuilt = {
        "features_info": {"float_features": [
            {"borders": b, "feature_id": "", "feature_index": i, "flat_feature_index": i,
             "has_nans": f.get("has_nans", False), "nan_value_treatment": f.get("nan_value_treatment", "AsIs")}
            for i, (f, b) in enumerate(zip(floats, borders))]},
        "model_info": {"params": {"loss_function": {"params": {}, "type": loss}}},
        "oblivious_trees": [{"leaf_values": t["leaf_values"], "leaf_weights": t.get("leaf_weights", [0] * (1 << len(
            t["splits"]))), "splits": [{k: s[k] for k in split_keys} for s in t["splits"]]} for t in trees],
        "scale_and_bias": [sb[0], list(sb[1])]}
    return CheckedModel(loss, n_classes, n_features, rebuilt)


def _loss(info, name: str) -> tuple[str, int]:
    try:
        loss = info["params"]["loss_function"]["type"]
        classes = info.get("class_params", {}).get("class_names", [])
    except (KeyError, TypeError, AttributeError):
        raise _bad(name, "model_info.params.loss_function is missing") from None
    if loss not in LOSSES:
        raise UserError(f"{name}: a CatBoost model with loss '{str(loss)[:40]}'; mlwarden audits classifiers "
                        f"({', '.join(LOSSES)})")
    n = len(classes) if isinstance(classes, list) else 0
    if loss == "MultiClass" and not 2 <= n <= MAX_CLASSES:
        raise _bad(name, f"a MultiClass model with {n} class names")
    return loss, (n if loss == "MultiClass" else 2)


def parse_json(raw: bytes, name: str):
    try:
        return json.loads(raw)
    except RecursionError:
        raise _bad(name, "JSON nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise _bad(name, str(e)[:160]) from None


def check_cbm_layout(raw: bytes, name: str) -> None:
    """What can be checked without CatBoost: the magic and a core size that stays inside the file."""
    if len(raw) < 8 or raw[:4] != MAGIC:
        raise _bad(name, "shorter than a .cbm header or no CBM1 magic")
    size = struct.unpack("<I", raw[4:8])[0]
    if not 8 <= size <= len(raw) - 8:
        raise _bad(name, f"the header declares a {size}-byte model in a {len(raw)}-byte file")


_CHILD = r"""
import os, resource, sys
mem, cpu = int(sys.argv[1]), int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
raw = sys.stdin.buffer.read()
out = os.dup(1)
os.dup2(2, 1)   # anything CatBoost prints goes to stderr; only the JSON goes to the parent's pipe
import catboost
m = catboost.CatBoost()
m.load_model(blob=raw)
m.save_model("/dev/fd/%d" % out, format="json")
"""


def cbm_to_json(raw: bytes, name: str) -> bytes:
    """The `.cbm` model as CatBoost's JSON, written by CatBoost in a child process under resource limits."""
    from .guard import own_step
    check_cbm_layout(raw, name)
    try:
        with own_step():   # a constant program; the file's bytes only reach it on stdin
            r = subprocess.run([sys.executable, "-I", "-c", _CHILD, str(CHILD_MEMORY), str(CHILD_CPU_S)], input=raw,
                               capture_output=True, timeout=2 * CHILD_CPU_S, env={"OMP_NUM_THREADS": "1"}, check=False)
    except subprocess.TimeoutExpired:
        raise _bad(name, f"CatBoost's reader did not finish within {2 * CHILD_CPU_S} s") from None
    if r.returncode < 0:
        import signal
        try:
            sig = signal.Signals(-r.returncode).name
        except ValueError:
            sig = f"signal {-r.returncode}"
        raise _bad(name, f"CatBoost's reader crashed on it ({sig}, in a child process)")
    if r.returncode != 0:
        lines = [ln.strip() for ln in r.stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
        why = next((ln for ln in reversed(lines) if "Error" in ln), lines[-1] if lines else "no message")
        why = re.sub(r"^\S+\.(?:cpp|h):\d+:\s*", "", why.split("Error: ", 1)[-1])   # no source-file prefix
        raise _bad(name, f"CatBoost's reader: {why[:160]}")
    return r.stdout


def _load_json_model(lib, text: bytes):
    """CatBoost reads JSON only from a path: an anonymous memory file where the system has one, else a private
    temporary file, deleted at once."""
    model = lib.CatBoost()
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("catboost-model.json")
        try:
            os.write(fd, text)
            model.load_model(f"/proc/self/fd/{fd}", format="json")
        finally:
            os.close(fd)
        return model
    from .guard import own_step
    with own_step(), tempfile.TemporaryDirectory(prefix="mlwarden-catboost-") as d:
        path = os.path.join(d, "model.json")
        with open(path, "wb") as f:
            f.write(text)
        model.load_model(path, format="json")
    return model


class CatBoostScores:
    """A CatBoost classifier as a function of numpy rows, predicting with the calling process's torch thread
    count. `source` is a file path or checked JSON bytes (what travels to a backend's worker)."""

    library = "catboost"

    def __init__(self, source: str | bytes, name: str):
        self.source, self.name = source, name
        self._open()

    def __getstate__(self):   # the model's JSON as read (a .cbm already converted): the worker checks it again
        return {"source": self._read, "name": self.name}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._open()

    def _open(self):
        lib = require("catboost", "trees", "loading a CatBoost model")
        raw = self.source
        if isinstance(raw, str):
            if os.path.getsize(raw) > MAX_FILE:
                raise _bad(self.name, f"larger than {MAX_FILE >> 30} GiB")
            with open(raw, "rb") as f:
                raw = f.read()
        if raw[:4] == MAGIC:
            raw = cbm_to_json(raw, self.name)
        self._read = bytes(raw)
        doc = parse_json(raw, self.name)
        checked = check_model(doc, self.name)
        self.loss, self.n_classes, self.n_features = checked.loss, checked.n_classes, checked.n_features
        self.output = LOSSES[self.loss]
        self._doc, self.train = checked.doc, training_params(doc)
        self._json = json.dumps(checked.doc).encode()   # only what was checked, one key each, reaches CatBoost
        try:
            self._model = _load_json_model(lib, self._json)
        except Exception as e:  # noqa: BLE001 - CatBoost rejecting a checked file is still one line
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise _bad(self.name, first[:200]) from None

    access = Access.SCORES

    def __call__(self, a: np.ndarray) -> np.ndarray:
        import torch
        a = np.ascontiguousarray(a.reshape(a.shape[0], -1), dtype=np.float32)
        p = self._model.predict(a, prediction_type="Probability", thread_count=torch.get_num_threads())
        return np.asarray(p, dtype=np.float32).reshape(len(a), -1)

    def _margins(self, a: np.ndarray) -> np.ndarray:
        raw = self._model.predict(np.asarray(a, np.float32), prediction_type="RawFormulaVal", thread_count=1)
        return np.asarray(raw, np.float64).reshape(len(a), -1)

    def ensemble(self, probe: np.ndarray):
        """The oblivious trees as full binary trees (io/tree_ensemble.py), base margins measured on `probe`."""
        from .tree_ensemble import TreeEnsemble, measured_base
        trees = oblivious_as_binary(self._doc)
        n_groups = 1 if self.output == "p1" else self.n_classes
        ens = TreeEnsemble("catboost", self.loss, self.n_features, n_groups, False, tuple(trees), np.zeros(n_groups))
        return measured_base(ens, probe, self._margins)


def oblivious_as_binary(doc) -> list:
    """Each oblivious tree of a checked JSON model as one full binary tree per output dimension. CatBoost's leaf
    index has bit i set when x[feature_i] > border_i (split i of the tree's `splits`); leaf_values holds
    dimension d of leaf j at j x dims + d; every value is multiplied by the model's scale. Node n's children are
    2n+1 (x <= border) and 2n+2; the root splits on the last split (the leaf index's high bit) so that the
    leaves, left to right, are leaf indices 0 .. 2^depth - 1."""
    from .tree_ensemble import Tree
    scale = float(doc.get("scale_and_bias", [1.0])[0])
    out = []
    for t in doc["oblivious_trees"]:
        depth = len(t["splits"])
        inner, leaves = (1 << depth) - 1, 1 << depth
        values = np.asarray(t["leaf_values"], np.float64).reshape(leaves, -1) * scale
        feature = np.full(inner + leaves, -1, np.int64)
        threshold = np.zeros(inner + leaves)
        left, right = np.full(inner + leaves, -1, np.int64), np.full(inner + leaves, -1, np.int64)
        for level in range(depth):
            s = t["splits"][depth - 1 - level]
            nodes = np.arange((1 << level) - 1, (1 << (level + 1)) - 1)
            feature[nodes] = s["float_feature_index"]   # = its flat index (check_model)
            threshold[nodes] = float(np.float32(s["border"]))
            left[nodes], right[nodes] = 2 * nodes + 1, 2 * nodes + 2
        for d in range(values.shape[1]):
            value = np.concatenate([np.zeros(inner), values[:, d]])
            out.append(Tree(feature, threshold, left, right, value, d))
    return out


def catboost_target(path: str, name: str, data: Dataset) -> Target:
    """The CatBoost classifier in the file at `path` as a target for `data`, whose feature count it must take."""
    fn = CatBoostScores(path, name)
    width = int(np.prod(data.input_shape))
    if fn.n_features != width:
        raise UserError(f"{name}: the CatBoost model takes {fn.n_features} features, the data has {width}")
    return NumpyTarget(fn, fn.n_classes, data.input_shape, fn.access, name, "catboost")


# CatBoost's training options that shape an oblivious-tree classifier, where its JSON keeps them
# (model_info.params, https://catboost.ai/en/docs/references/training-parameters/), each with the check its
# value must pass to be used again: anything else in params (train_dir, file names, thread counts, iterations
# the trees do not hold) is never read
_TRAIN = (("learning_rate", ("boosting_options", "learning_rate"), lambda v: _finite(v) and 0 < v <= 1),
          ("l2_leaf_reg", ("tree_learner_options", "l2_leaf_reg"), lambda v: _finite(v) and 0 <= v <= 1e6),
          ("random_strength", ("tree_learner_options", "random_strength"), lambda v: _finite(v) and 0 <= v <= 1e6),
          ("rsm", ("tree_learner_options", "rsm"), lambda v: _finite(v) and 0 < v <= 1),
          ("bootstrap_type", ("tree_learner_options", "bootstrap", "type"),
           lambda v: v in ("Bayesian", "Bernoulli", "MVS", "No")),
          ("bagging_temperature", ("tree_learner_options", "bootstrap", "bagging_temperature"),
           lambda v: _finite(v) and 0 <= v <= 1e6),
          ("subsample", ("tree_learner_options", "bootstrap", "subsample"), lambda v: _finite(v) and 0 < v <= 1),
          ("leaf_estimation_method", ("tree_learner_options", "leaf_estimation_method"),
           lambda v: v in ("Newton", "Gradient")),
          ("leaf_estimation_iterations", ("tree_learner_options", "leaf_estimation_iterations"),
           lambda v: _int(v, 1, 11)),
          ("border_count", ("data_processing_options", "float_features_binarization", "border_count"),
           lambda v: _int(v, 1, 1025)),
          ("boost_from_average", ("boosting_options", "boost_from_average"), lambda v: isinstance(v, bool)))


def training_params(doc) -> tuple:
    """(name, value) pairs of the training options in `_TRAIN` that the JSON model records and that pass their
    check; a missing, mistyped or out-of-range one is left to CatBoost's default."""
    params = ((doc.get("model_info") or {}) if isinstance(doc, dict) else {})
    params = params.get("params") if isinstance(params, dict) else None
    out = []
    for name, path, ok in _TRAIN:
        v = params
        for k in path:
            v = v.get(k) if isinstance(v, dict) else None
        if v is not None and ok(v):
            out.append((name, v))
    kept = dict(out)
    if kept.get("bootstrap_type") != "Bayesian":
        kept.pop("bagging_temperature", None)
    if kept.get("bootstrap_type") not in ("Bernoulli", "MVS"):
        kept.pop("subsample", None)
    return tuple(kept.items())
