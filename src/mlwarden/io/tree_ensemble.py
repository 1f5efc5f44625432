"""The trees of an XGBoost or LightGBM booster as one typed record, for attacks that need the structure
(the mixed-integer evasion attack of Kantchelian, Tygar & Joseph 2016, threats/tricking/tree_milp.py).

Read from what the libraries write about their own models: XGBoost's JSON model (`Booster.save_raw("json")`,
schema in XGBoost's doc/model.schema: per tree `left_children`, `right_children`, `split_indices`,
`split_conditions` (the leaf value at a leaf), `tree_info` (the output group of each tree)), LightGBM's model
text (`Booster.model_to_string()`, per tree `split_feature`, `threshold`, `decision_type`, `left_child`,
`right_child` (-1 - j for leaf j), `leaf_value`; tree k adds to group k mod num_tree_per_iteration). Row x goes left at a node when x[feature] < threshold (XGBoost,
compared in float32) or x[feature] <= threshold (LightGBM, in float64). The margin of output group k is
base[k] plus the leaf values of group k's trees; the class is margin > 0 for one group (binary), argmax otherwise.

The base margins are measured, not read (XGBoost writes base_score in probability units whose transform
depends on the objective and version): base = booster margin - parsed leaf sum on probe rows, and a parse
whose leaf sums do not differ from the booster's margins by one constant is refused (`EnsembleMismatch`).
"""
from __future__ import annotations

import json
import re
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

    @property
    def path_length(self) -> int:
        """The sum of the leaves' depths (the nonzeros of the MILP's split constraints)."""
        depth, total, stack = {0: 0}, 0, [0]
        while stack:
            n = stack.pop()
            if self.left[n] < 0:
                total += depth[n]
                continue
            for c in (int(self.left[n]), int(self.right[n])):
                depth[c] = depth[n] + 1
                stack.append(c)
        return total

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

    @property
    def path_length(self) -> int:
        return sum(t.path_length for t in self.trees)

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
    """From LightGBM's model text (the arrays io/boosters.py checked on loading; `dump_model`'s JSON nests one
    level per tree level, which a deep tree turns into a RecursionError). Internal node i is node i, leaf j is
    node num_leaves - 1 + j (a child -1 - j)."""
    text = booster.model_to_string()        # the rounds predict uses (best_iteration when there is one)
    head = text[:text.find("\nTree=")] if "\nTree=" in text else text
    meta = dict(line.split("=", 1) for line in head.splitlines() if "=" in line)
    n_groups = int(meta.get("num_tree_per_iteration", "1"))
    blocks = re.split(r"^Tree=\d+\s*$", text.split("end of trees")[0], flags=re.MULTILINE)[1:]
    # a random forest (average_output) predicts the mean of its trees per group
    scale = 1.0 / max(len(blocks) // max(n_groups, 1), 1) if re.search(r"^average_output\s*$", head, re.MULTILINE) \
        else 1.0
    trees = []
    for k, block in enumerate(blocks):
        kv = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        leaves = int(kv["num_leaves"])
        values = np.array(kv["leaf_value"].split(), np.float64) * scale
        if leaves == 1:
            trees.append(_tree([-1], [0.0], [-1], [-1], values, k % n_groups))
            continue
        ints = {key: np.array(kv[key].split(), np.int64) for key in ("split_feature", "left_child", "right_child",
                                                                     "decision_type")}
        if ((ints["decision_type"] >> 2) & 3 == 1).any():
            raise EnsembleMismatch(f"LightGBM tree {k}: a split with zero as missing (zero_as_missing) (the attack "
                                   "reads numeric splits whose missing values are NaN or none)")
        inner = leaves - 1
        feature = np.concatenate([ints["split_feature"], np.full(leaves, -1)])
        threshold = np.concatenate([np.array(kv["threshold"].split(), np.float64), np.zeros(leaves)])
        left, right = (np.concatenate([np.where(c >= 0, c, inner + ~c), np.full(leaves, -1)])
                       for c in (ints["left_child"], ints["right_child"]))
        trees.append(_tree(feature, threshold, left, right, np.concatenate([np.zeros(inner), values]), k % n_groups))
    return trees, n_groups, meta.get("objective", "unknown").split()[0]


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
    return measured_base(ens, probe, margins)


def measured_base(ens: TreeEnsemble, probe: np.ndarray, margins) -> TreeEnsemble:
    """`ens` with its base margins measured on `probe` rows against `margins(probe) -> (n, n_groups)`, the
    model's own raw margins; EnsembleMismatch when the parsed trees disagree beyond float32 rounding."""
    probe = np.asarray(probe, np.float32).reshape(len(probe), -1)
    want = np.asarray(margins(probe), np.float64).reshape(len(probe), ens.n_groups)
    diff = want - ens.leaf_sums(probe)
    base = np.median(diff, axis=0)
    worst = float(np.max(np.abs(diff - base) / (1 + np.abs(want)))) if len(probe) else 0.0
    if worst > MISMATCH_TOL:
        raise EnsembleMismatch(f"the parsed {ens.library} trees miss the booster's margins by up to {worst:.2g} "
                               f"(relative; limit {MISMATCH_TOL:g})")
    return TreeEnsemble(ens.library, ens.objective, ens.n_features, ens.n_groups, ens.strict, ens.trees, base)
