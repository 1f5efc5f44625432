"""XGBoost and LightGBM models in their own files (XGBoost JSON or UBJSON, LightGBM text) as score targets.

Each file is parsed by its library's own reader (`xgboost.Booster().load_model`, `lightgbm.Booster(
model_str=...)`), never unpickled: the formats hold trees and numbers, no code (io/scan/formats.py
`booster_kind` recognises them by content). The target answers class probabilities, as the user's
`predict_proba` would: a binary booster's P(class 1) becomes two columns, a multiclass booster's n columns.
"""
from __future__ import annotations

import json
import re
from itertools import pairwise

import numpy as np

from ..core.data import MAX_CLASSES, Dataset
from ..core.errors import UserError
from ..core.extras import require
from ..core.target import Access, NumpyTarget, Target

LIBRARY = {"xgboost": "XGBoost", "lightgbm": "LightGBM", "catboost": "CatBoost"}   # CatBoost: io/catboost_files.py
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
        raw = src
        if isinstance(src, str):
            with open(src, "rb") as f:
                raw = bytearray(f.read())
        if self.library == "lightgbm":   # a wrong tree_sizes makes LightGBM's parallel parse abort the process
            text = re.sub(r"^tree_sizes=.*\r?\n", "", raw.decode("utf-8", "replace"), count=1, flags=re.MULTILINE)
            _check_lgb_trees(text, self.name)
            src = bytearray(text.encode())
        elif not _XGB_UBJ_HEAD.match(bytes(raw[:2])):
            _check_xgb_trees(_json_or_error(raw, self.name), self.name)   # before XGBoost's recursive parser
        else:
            _check_xgb_trees(_ubj_or_error(bytes(raw), self.name), self.name)
        try:
            if self.library == "xgboost":
                self._booster = lib.Booster()
                self._booster.load_model(src)
                self.objective, self.n_classes = _xgb_objective(self._booster)
                self.n_features = self._booster.num_features()
                best = self._booster.attr("best_iteration")   # what the user's predict uses after early stopping
                rounds = self._booster.num_boosted_rounds()
                if best is not None and not (best.isdigit() and int(best) < rounds):   # XGBoost checks it at predict
                    raise UserError(f"{self.name}: not a loadable XGBoost model (best_iteration {best[:40]!r} is not "
                                    f"one of its {rounds} rounds)")
                self._rounds = (0, int(best) + 1) if best is not None else (0, 0)
            else:
                self._booster = lib.Booster(model_str=src.decode("utf-8"))
                self.objective, self.n_classes = _lgb_objective(self._booster.model_to_string())
                self.n_features = self._booster.num_feature()
        except UserError:
            raise
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

    def ensemble(self, probe: np.ndarray):
        """The parsed trees (io/tree_ensemble.py), their base margins measured against this booster on `probe`."""
        from .tree_ensemble import parse_booster
        return parse_booster(self._booster, self.library, self._rounds if self.library == "xgboost" else (0, 0),
                             probe, self._margins)

    def _margins(self, a: np.ndarray) -> np.ndarray:
        if self.library == "xgboost":
            return self._booster.inplace_predict(a, iteration_range=self._rounds, predict_type="margin")
        return self._booster.predict(a, raw_score=True, num_threads=1)


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


_XGB_UBJ_HEAD = re.compile(rb"\{[iUIlL]")


def _json_or_error(raw, name: str):
    try:
        return json.loads(bytes(raw))
    except RecursionError:
        raise UserError(f"{name}: not a loadable XGBoost model (JSON nested too deeply)") from None
    except ValueError as e:
        raise UserError(f"{name}: not a loadable XGBoost model ({str(e)[:160]})") from None


def _check_tree(name: str, where: str, left, right, feats, n_feat: int, n_leaf_ids: int | None = None):
    """A binary tree from its child arrays: every child in range, every node reached from the root exactly
    once (no cycles, no shared nodes), every split's feature below the model's feature count. Malformed trees
    send the libraries' native predictors into endless loops or out-of-bounds reads."""
    def bad(why):
        return UserError(f"{name}: not a loadable model ({where}: {why})")
    n = len(left)
    if len(right) != n or len(feats) < n:
        raise bad("child and feature arrays differ in length")
    seen, stack, leaves = bytearray(max(n, 1)), [0], set()
    while stack:
        i = stack.pop()
        if seen[i]:
            raise bad(f"node {i} is reached twice (a cycle or a shared node)")
        seen[i] = 1
        if n_leaf_ids is None and left[i] == -1:   # XGBoost: a leaf has -1 children
            if right[i] != -1:
                raise bad(f"node {i} has one child")
            continue
        if not (isinstance(feats[i], int) and 0 <= feats[i] < n_feat):
            raise bad(f"node {i} splits on feature {feats[i]}, the model has {n_feat}")
        for c in (left[i], right[i]):
            if not isinstance(c, int):
                raise bad(f"node {i} has a child that is not an index")
            if n_leaf_ids is not None and c < 0:
                if ~c >= n_leaf_ids or ~c in leaves:
                    raise bad(f"node {i} points at leaf {~c}, out of range or shared")
                leaves.add(~c)
            elif 0 < c < n:
                stack.append(c)
            else:
                raise bad(f"node {i} has child {c}, out of range")
    if not all(seen[:n]):
        raise bad("a node is not reachable from the root")
    if n_leaf_ids is not None and n and len(leaves) != n_leaf_ids:
        raise bad("a leaf is not reachable from the root")


def _check_xgb_trees(doc, name: str):
    try:
        learner = doc["learner"]
        n_feat = int(learner["learner_model_param"]["num_feature"])
        booster = learner["gradient_booster"]
        model = (booster.get("gbtree") or booster)["model"]
        trees = model.get("trees", [])
        n_class = int(learner["learner_model_param"].get("num_class", "0"))
        if not 0 <= n_class <= MAX_CLASSES or not 0 <= n_feat <= 1 << 24:
            raise UserError(f"{name}: not a loadable XGBoost model (num_class {n_class}, num_feature {n_feat})")
        # the objective's own class count (softmax_multiclass_param.num_class) must be the learner's: XGBoost 3
        # reconfigures it from the learner on load, so 100000 or 1 beside 3 loaded silently and predicted 3
        # columns; a file where the two disagree was edited after XGBoost wrote it, and another version may trust it
        for part, params in (learner.get("objective") or {}).items():
            if isinstance(params, dict) and "num_class" in params and int(params["num_class"]) != n_class:
                raise UserError(f"{name}: not a loadable XGBoost model (objective {part}.num_class "
                                f"{str(params['num_class'])[:20]!r} is not the learner's num_class {n_class})")
        for k, t in enumerate(trees):
            n = int(t["tree_param"]["num_nodes"])
            left, right, feats = t["left_children"], t["right_children"], t["split_indices"]
            if len(left) != n:
                raise UserError(f"{name}: not a loadable model (tree {k}: {len(left)} nodes, declares {n})")
            if any(x for x in t.get("split_type", [])) or t.get("categories_nodes"):
                raise UserError(f"{name}: a model with categorical splits; mlwarden audits numeric-split trees")
            _check_tree(name, f"tree {k}", left, right, feats, n_feat)
        # each tree's output group, and where each round's trees start: XGBoost indexes with them unchecked (a
        # tree_info of -5 corrupted the heap, SIGABRT at the first prediction; 99999 passed silently)
        groups, info = max(n_class, 1), [int(g) for g in model.get("tree_info", [])]
        if len(info) != len(trees) or any(not 0 <= g < groups for g in info):
            raise UserError(f"{name}: not a loadable XGBoost model (tree_info must give each of its {len(trees)} "
                            f"trees an output group in 0..{groups - 1})")
        ptr = [int(i) for i in model.get("iteration_indptr", [0, len(trees)])]
        if not ptr or ptr[0] != 0 or ptr[-1] != len(trees) or any(b < a for a, b in pairwise(ptr)):
            raise UserError(f"{name}: not a loadable XGBoost model (iteration_indptr does not cut its {len(trees)} "
                            "trees into rounds)")
    except UserError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise UserError(f"{name}: not a loadable XGBoost model (tree structure: {type(e).__name__} {str(e)[:80]})") \
            from None


def _check_lgb_parameters(text: str, name: str) -> None:
    """The `parameters:` section LightGBM's model writer ends a file with holds one `[name: value]` per line;
    LightGBM 4.7 splits each line's inside at ':' unchecked, and a line without one ('[machines:', 'junk', '[]')
    crashed the process (SIGSEGV) while the model loaded."""
    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.strip() == "parameters:"), None)
    if start is None:
        return
    end = next((i for i in range(start + 1, len(lines)) if lines[i].strip() == "end of parameters"), None)
    if end is None:
        raise UserError(f"{name}: not a loadable LightGBM model (its parameters section has no 'end of parameters')")
    for i in range(start + 1, end):
        ln = lines[i].strip()
        if ln and not (len(ln) > 2 and ln[0] == "[" and ln[-1] == "]" and ":" in ln[1:-1]):   # LightGBM writes a
            raise UserError(f"{name}: not a loadable LightGBM model (line {i + 1}, in its parameters section, is "
                            f"not [name: value]: {ln[:60]!r})")                            # blank line at the end


def _check_lgb_trees(text: str, name: str):
    _check_lgb_parameters(text, name)
    head = text[:text.find("\nTree=")] if "\nTree=" in text else text
    m = re.search(r"^max_feature_idx=(\d+)", head, re.MULTILINE)
    k = re.search(r"^num_tree_per_iteration=(\d+)", head, re.MULTILINE)
    if not m:
        raise UserError(f"{name}: not a loadable LightGBM model (no max_feature_idx in its header)")
    n_feat = int(m.group(1)) + 1
    blocks = re.split(r"^Tree=\d+\s*$", text, flags=re.MULTILINE)[1:]
    c = re.search(r"^num_class=(\d+)", head, re.MULTILINE)
    if c and int(c.group(1)) > 1 and (not k or int(k.group(1)) != int(c.group(1))):
        raise UserError(f"{name}: not a loadable LightGBM model (num_class={c.group(1)} but num_tree_per_iteration="
                        f"{k.group(1) if k else 'missing'})")
    # the objective's own num_class sizes LightGBM's output transform: one other than the header's made it read
    # past its buffer (num_class:99999999 and an empty objective= crashed the audit with SIGSEGV at predict)
    obj = re.search(r"^objective=(.*)$", head, re.MULTILINE)
    given = [t.split(":", 1)[1] for t in obj.group(1).split() if t.startswith("num_class:")] if obj else []
    if obj and (not obj.group(1).strip() or any(g != (c.group(1) if c else "1") for g in given)):
        raise UserError(f"{name}: not a loadable LightGBM model (objective={obj.group(1)[:60]!r} does not match its "
                        f"num_class={c.group(1) if c else 'missing'})")
    if k and blocks and len(blocks) % max(int(k.group(1)), 1):
        raise UserError(f"{name}: not a loadable LightGBM model ({len(blocks)} trees, not a multiple of "
                        f"num_tree_per_iteration={k.group(1)})")
    for t, block in enumerate(blocks):
        kv = dict(line.split("=", 1) for line in block.split("end of trees")[0].splitlines() if "=" in line)
        try:
            leaves = int(kv["num_leaves"])
            if leaves < 1:
                raise ValueError("num_leaves < 1")
            if kv.get("is_linear", "0").strip() != "0":
                raise UserError(f"{name}: a LightGBM model with linear trees; mlwarden audits constant-leaf trees")
            if len(kv.get("leaf_value", "").split()) != leaves:
                raise ValueError("leaf_value does not hold num_leaves values")
            if leaves == 1:
                continue
            ints = {key: [int(v) for v in kv[key].split()] for key in ("split_feature", "left_child", "right_child",
                                                                     "decision_type")}
            if any(len(v) != leaves - 1 for v in ints.values()) or len(kv["threshold"].split()) != leaves - 1:
                raise ValueError("split arrays do not hold num_leaves - 1 values")
            n_cat = int(kv.get("num_cat", "0"))
            if n_cat or any(d & 1 for d in ints["decision_type"]):
                raise UserError(f"{name}: a LightGBM model with categorical splits; mlwarden audits numeric-split "
                                "trees")
        except UserError:
            raise
        except (KeyError, ValueError) as e:
            raise UserError(f"{name}: not a loadable LightGBM model (tree {t}: {type(e).__name__} "
                            f"{str(e)[:80]})") from None
        _check_tree(name, f"tree {t}", ints["left_child"], ints["right_child"], ints["split_feature"], n_feat,
                    n_leaf_ids=leaves)


_UBJ_NUM = {b"i": ">b", b"U": ">B", b"I": ">h", b"l": ">i", b"L": ">q", b"d": ">f", b"D": ">d"}


def _ubj_or_error(raw: bytes, name: str):
    """UBJSON as XGBoost writes it, decoded in Python with every declared count checked against the bytes
    left (XGBoost's own reader recurses without limit and trusts the trees it reads)."""
    import struct
    pos = 0

    def take(n):
        nonlocal pos
        if n < 0 or pos + n > len(raw):
            raise ValueError("truncated or a declared size past the end of the file")
        pos += n
        return raw[pos - n:pos]

    def number(m):
        fmt = _UBJ_NUM.get(m)
        if fmt is None:
            raise ValueError(f"unexpected marker {m!r}")
        return struct.unpack(fmt, take(struct.calcsize(fmt)))[0]

    def length():
        n = number(take(1))
        if not isinstance(n, int) or n < 0 or n > len(raw) - pos:
            raise ValueError("a declared length past the end of the file")
        return n

    def value(m, depth):
        if depth > 64:
            raise ValueError("nested too deeply")
        if m in _UBJ_NUM:
            return number(m)
        if m in (b"T", b"F", b"Z"):
            return {b"T": True, b"F": False, b"Z": None}[m]
        if m == b"S":
            return take(length()).decode("utf-8", "replace")
        if m in (b"[", b"{"):
            typ = cnt = None
            if raw[pos:pos + 1] == b"$":
                take(1)
                typ = take(1)
            if raw[pos:pos + 1] == b"#":
                take(1)
                cnt = length()
            elif typ is not None:
                raise ValueError("a typed container without a count")
            out = [] if m == b"[" else {}
            i = 0
            while cnt is None or i < cnt:
                if cnt is None and raw[pos:pos + 1] == (b"]" if m == b"[" else b"}"):
                    take(1)
                    break
                if m == b"{":
                    key = take(length()).decode("utf-8", "replace")
                out_v = value(typ if typ is not None else take(1), depth + 1)
                if m == b"[":
                    out.append(out_v)
                else:
                    out[key] = out_v
                i += 1
            return out
        raise ValueError(f"unexpected marker {m!r}")

    try:
        return value(take(1), 0)
    except (ValueError, struct.error, RecursionError) as e:
        raise UserError(f"{name}: not a loadable XGBoost model (UBJSON at byte {pos}: {str(e)[:100]})") from None
