"""The trees of an XGBoost or LightGBM booster as one typed record, for attacks that need the structure
(the mixed-integer evasion attack of Kantchelian, Tygar & Joseph 2016, threats/tricking/tree_milp.py).

Read from what the libraries write about their own models: XGBoost's JSON model (`Booster.save_raw("json")`,
schema in XGBoost's doc/model.schema: per tree `left_children`, `right_children`, `split_indices`,
`split_conditions` (the leaf value at a leaf), `tree_info` (the output group of each tree)), LightGBM's
`Booster.dump_model()` (nested `tree_structure` nodes with `split_feature`, `threshold`, `decision_type`,
`left_child`, `right_child`, `leaf_value`). Row x goes left at a node when x[feature] < threshold (XGBoost,
compared in float32) or x[feature] <= threshold (LightGBM, in float64). The margin of output group k is
base[k] plus the leaf values of group k's trees; the class is margin > 0 for one group (binary), argmax otherwise.

The base margins are measured, not read (XGBoost writes base_score in probability units whose transform
depends on the objective and version): base = booster margin - parsed leaf sum on probe rows, and a parse
whose leaf sums do not differ from the booster's margins by one constant is refused (`EnsembleMismatch`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

MISMATCH_TOL = 1e-3   # margin units, relative to 1 + |margin|: float32 sums of a few hundred leaves stay far below


class EnsembleMismatch(ValueError):
    """The parsed trees do not reproduce the booster's own margins (a format this parser does not know)."""


@dataclass(frozen=True)
class Tree:
    """One regression tree in arrays indexed by node; leaves have feature -1 and children -1."""
    feature: np.ndarray    # int64
    threshold: np.ndarray  # float64 (XGBoost's are float32 values)
    left: np.ndarray       # int64
    right: np.ndarray      # int64
    value: np.ndarray      # float64, the leaf value (learning rate included) at leaves, 0 elsewhere
    group: int             # the output group (class) whose margin this tree adds to

    @property
    def leaves(self) -> np.ndarray:
        return np.flatnonzero(self.left < 0)

    def leaf_of(self, x: np.ndarray, strict: bool) -> np.ndarray:
        """The leaf each row of x (float32) reaches."""
        node = np.zeros(len(x), dtype=np.int64)
        for _ in range(len(self.feature)):
            inner = self.left[node] >= 0
            if not inner.any():
                break
            f = self.feature[node[inner]]
            v = x[np.flatnonzero(inner), f]
            t = self.threshold[node[inner]]
            go_left = (v.astype(np.float32) < t.astype(np.float32)) if strict else (v.astype(np.float64) <= t)
            node[inner] = np.where(go_left, self.left[node[inner]], self.right[node[inner]])
        return node


@dataclass(frozen=True)
class TreeEnsemble:
    library: str
    objective: str
    n_features: int
    n_groups: int          # 1: a binary model (class 1 when the margin is > 0); k: one margin per class
    strict: bool           # True: left when x < threshold (XGBoost); False: x <= threshold (LightGBM)
    trees: tuple[Tree, ...]
    base: np.ndarray       # (n_groups,) float64

    @property
    def n_classes(self) -> int:
        return max(self.n_groups, 2)

    @property
    def n_leaves(self) -> int:
        return sum(len(t.leaves) for t in self.trees)

    def leaf_sums(self, x: np.ndarray) -> np.ndarray:
        out = np.zeros((len(x), self.n_groups))
        for t in self.trees:
            out[:, t.group] += t.value[t.leaf_of(x, self.strict)]
        return out

    def margins(self, x: np.ndarray) -> np.ndarray:
        """(n, n_groups) margins of the rows of x, in float64."""
        return self.base[None] + self.leaf_sums(np.asarray(x, dtype=np.float32).reshape(len(x), -1))

    def predict(self, x: np.ndarray) -> np.ndarray:
        m = self.margins(x)
        return (m[:, 0] > 0).astype(np.int64) if self.n_groups == 1 else m.argmax(1)


def _tree(feature, threshold, left, right, value, group) -> Tree:
    return Tree(np.asarray(feature, np.int64), np.asarray(threshold, np.float64), np.asarray(left, np.int64),
                np.asarray(right, np.int64), np.asarray(value, np.float64), int(group))


def _xgboost_trees(booster) -> tuple[list[Tree], int, str]:
    doc = json.loads(bytes(booster.save_raw("json")))
    learner = doc["learner"]
    gb = learner["gradient_booster"]
    if gb.get("name") not in ("gbtree",):
        raise EnsembleMismatch(f"XGBoost booster '{gb.get('name')}' (the attack reads gbtree models; dart "
                               "scales its trees at prediction time, gblinear has none)")
    model = gb["model"]
    trees = []
    for t, group in zip(model["trees"], model["tree_info"]):
        left = np.asarray(t["left_children"], np.int64)
        leaf = left < 0
        cond = np.asarray(t["split_conditions"], np.float64)
        feature = np.where(leaf, -1, np.asarray(t["split_indices"], np.int64))
        trees.append(_tree(feature, np.where(leaf, 0.0, cond.astype(np.float32)), left,
                           np.asarray(t["right_children"], np.int64), np.where(leaf, cond, 0.0), group))
    n_groups = max(int(learner["learner_model_param"].get("num_class", "0")), 1)
    return trees, n_groups, learner["objective"]["name"]


def _lightgbm_trees(booster) -> tuple[list[Tree], int, str]:
    doc = booster.dump_model()
    n_groups = int(doc.get("num_tree_per_iteration", 1))
    infos = doc["tree_info"]
    scale = 1.0 / max(len(infos) // max(n_groups, 1), 1) if doc.get("average_output") else 1.0   # random forest
    trees = []
    for k, info in enumerate(infos):
        feature, threshold, left, right, value = [], [], [], [], []
        stack = [(info["tree_structure"], None, None)]
        while stack:                      # pre-order, children patched into their parent once numbered
            node, parent, side = stack.pop()
            i = len(feature)
            if parent is not None:
                (left if side == "l" else right)[parent] = i
            if "split_feature" in node:
                if node.get("decision_type") != "<=" or node.get("missing_type") == "Zero":
                    raise EnsembleMismatch(f"LightGBM tree {k}: a '{node.get('decision_type')}' split with missing "
                                           f"type {node.get('missing_type')} (the attack reads numeric <= splits)")
                feature.append(int(node["split_feature"]))
                threshold.append(float(node["threshold"]))
                left.append(-1)
                right.append(-1)
                value.append(0.0)
                stack += [(node["right_child"], i, "r"), (node["left_child"], i, "l")]
            else:
                feature.append(-1)
                threshold.append(0.0)
                left.append(-1)
                right.append(-1)
                value.append(float(node["leaf_value"]) * scale)
        trees.append(_tree(feature, threshold, left, right, value, k % n_groups))
    return trees, n_groups, str(doc.get("objective", "unknown")).split()[0]


def parse_booster(booster, library: str, rounds: tuple[int, int], probe: np.ndarray, margins) -> TreeEnsemble:
    """The trees of `booster` (the rounds its predictions use), with base margins measured on `probe` rows
    against `margins(probe) -> (n, n_groups)`, the booster's own raw margins. Raises EnsembleMismatch when
    the parsed trees disagree with the booster beyond float32 rounding."""
    if library == "xgboost":
        if rounds[1]:
            booster = booster[rounds[0]:rounds[1]]
        trees, n_groups, objective = _xgboost_trees(booster)
        n_features = booster.num_features()
    else:
        trees, n_groups, objective = _lightgbm_trees(booster)
        n_features = booster.num_feature()
    ens = TreeEnsemble(library, objective, n_features, n_groups, library == "xgboost", tuple(trees),
                       np.zeros(n_groups))
    probe = np.asarray(probe, np.float32).reshape(len(probe), -1)
    want = np.asarray(margins(probe), np.float64).reshape(len(probe), n_groups)
    diff = want - ens.leaf_sums(probe)
    base = np.median(diff, axis=0)
    worst = float(np.max(np.abs(diff - base) / (1 + np.abs(want)))) if len(probe) else 0.0
    if worst > MISMATCH_TOL:
        raise EnsembleMismatch(f"the parsed {library} trees miss the booster's margins by up to {worst:.2g} "
                               f"(relative; limit {MISMATCH_TOL:g})")
    return TreeEnsemble(library, objective, n_features, n_groups, ens.strict, ens.trees, base)
