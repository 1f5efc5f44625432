"""A loaded model is checked before anything calls it. scikit-learn's compiled tree code trusts the arrays a
file gives it: a child or feature index out of range is an out-of-bounds read (a crash, or memory read back
as a prediction), a node that is its own child loops forever, and a `max_depth` below the real depth
overflows `decision_path`'s buffer. Every decision tree (alone, in a forest, boosted, in a pipeline) and
every histogram-boosting predictor is checked here: children come after their parent (how scikit-learn
builds them, which rules out cycles) and have one parent each, features are below the number of features
the model was fitted on, and the recorded depth is the real one. Neighbour trees (KD / ball trees) get the
same treatment for their index arrays, and scipy sparse matrices (a linear model's sparsified `coef_`) get
scipy's full index check, which scipy skips when it rebuilds one."""
from __future__ import annotations

import numpy as np

from ..core.errors import UserError

_MAX_OBJECTS = 2_000_000


def validate_estimator(obj, name: str) -> None:
    """Raise a one-line UserError naming the first structural fault found in `obj`'s trees and sparse arrays.
    The walk has no depth limit (it keeps a stack, not recursion), so nesting hides nothing; past
    `_MAX_OBJECTS` objects the model is refused, never passed unchecked."""
    seen: set[int] = set()
    # (object, the number of features its trees may split on, the cap an ensemble above it imposes)
    stack: list[tuple[object, int | None, int | None]] = [(obj, None, None)]
    while stack:
        o, n_features, cap = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if len(seen) > _MAX_OBJECTS:
            raise UserError(f"{name}: more than {_MAX_OBJECTS} objects inside the model; not checked, not loaded")
        cls = type(o)
        mod = cls.__module__
        nf = getattr(o, "n_features_in_", None) if mod.startswith("sklearn.") else None
        if isinstance(nf, (int, np.integer)):   # what scikit-learn checks the input's width against here
            n_features = int(nf) if cap is None else min(int(nf), cap)
        try:
            if mod == "sklearn.tree._tree" and cls.__name__ == "Tree":
                _check_tree(o, n_features)
                continue
            if cls.__name__ == "TreePredictor" and mod.endswith("_hist_gradient_boosting.predictor"):
                _check_predictor(o, n_features)
                continue
            if cls.__name__ in ("KDTree", "BallTree") and mod.startswith("sklearn.neighbors"):
                _check_binary_tree(o)
                continue
            if mod.startswith("scipy.sparse"):
                _check_sparse(o)
                continue
            if mod.startswith("sklearn.svm") and hasattr(o, "support_vectors_"):
                _check_libsvm(o)
        except _Fault as e:
            raise UserError(f"{name}: a malformed {cls.__name__} ({e}); a file scikit-learn wrote cannot look "
                            "like this, and using it would read outside its memory or never finish") from None
        if isinstance(o, dict):
            stack.extend((v, n_features, cap) for v in o.values())
        elif isinstance(o, (list, tuple)):
            stack.extend((v, n_features, cap) for v in o)
        elif isinstance(o, np.ndarray):
            if o.dtype == object:
                stack.extend((v, n_features, cap) for v in o.ravel()[:_MAX_OBJECTS])
        elif mod.startswith("sklearn.") and hasattr(o, "__dict__"):
            for key, v in vars(o).items():
                # an ensemble checks the input's width once, then calls its members' compiled code directly
                stack.append((v, n_features, n_features if key == "estimators_" and n_features is not None else cap))


class _Fault(Exception):
    pass


def _children(left: np.ndarray, right: np.ndarray, internal: np.ndarray) -> np.ndarray:
    """Check that internal nodes' children come after them and have exactly one parent; return the depth of
    every node."""
    n = len(left)
    idx = np.arange(n)
    li, ri = left[internal].astype(np.int64), right[internal].astype(np.int64)
    if (li <= idx[internal]).any() or (ri <= idx[internal]).any() or (li >= n).any() or (ri >= n).any():
        raise _Fault("a child index out of range or not after its parent")
    parents = np.zeros(n, np.int64)
    np.add.at(parents, li, 1)
    np.add.at(parents, ri, 1)
    if n and (parents[0] != 0 or (parents[1:] != 1).any()):
        raise _Fault("a node with no parent or several")
    depth = np.zeros(n, np.int64)
    for i in np.flatnonzero(internal):   # parents come first, so one pass in index order
        depth[left[i]] = depth[right[i]] = depth[i] + 1
    return depth


def _check_tree(tree, n_features: int | None) -> None:
    state = tree.__getstate__()
    nodes, values = state["nodes"], state["values"]
    n = int(state["node_count"])
    if n != len(nodes) or n < 1 or len(values) != n:
        raise _Fault(f"node_count {n} against {len(nodes)} nodes and {len(values)} values")
    left, right, feature = nodes["left_child"], nodes["right_child"], nodes["feature"]
    leaf = (left == -1) & (right == -1)
    internal = ~leaf
    if n_features is None:   # scikit-learn then skips its width check: the tree's own count cannot be trusted
        raise _Fault("a tree whose model does not record how many features it was fitted on")
    limit = min(int(tree.n_features), n_features)
    if ((feature[internal] < 0) | (feature[internal] >= limit)).any():
        raise _Fault(f"a split on a feature outside 0..{limit - 1}")
    depth = _children(left, right, internal)
    if int(state["max_depth"]) < int(depth.max()):
        raise _Fault(f"max_depth {state['max_depth']} below the real depth {int(depth.max())}")


def _check_predictor(pred, n_features: int | None) -> None:
    nodes = pred.nodes
    if len(nodes) < 1:
        raise _Fault("no nodes")
    internal = nodes["is_leaf"] == 0
    _children(nodes["left"], nodes["right"], internal)
    feat = nodes["feature_idx"][internal]
    if (feat < 0).any() or (n_features is not None and (feat >= n_features).any()):
        raise _Fault("a split on a feature out of range")
    cat = internal & (nodes["is_categorical"] != 0)
    rows = min(len(pred.binned_left_cat_bitsets), len(pred.raw_left_cat_bitsets))
    if (nodes["bitset_idx"][cat] >= rows).any():
        raise _Fault("a categorical split pointing past its bitsets")


def _check_libsvm(svm) -> None:
    """libsvm's predict trusts that the arrays agree: support vectors per class, dual coefficients and
    intercepts per pair of classes, probability parameters per pair."""
    sv = svm.support_vectors_
    n_sv = sv.shape[0]
    counts = np.asarray(getattr(svm, "_n_support", getattr(svm, "n_support_", [])))
    dual = np.asarray(getattr(svm, "_dual_coef_", svm.dual_coef_))
    intercept = np.asarray(getattr(svm, "_intercept_", svm.intercept_))
    if hasattr(svm, "classes_"):   # a classifier: counts per class, a dual row per other class, a pair intercept
        k = len(counts)
        if k != len(svm.classes_) or (counts < 0).any() or int(counts.sum()) != n_sv:
            raise _Fault("support vector counts that do not add up to the support vectors")
        rows, n_intercepts = max(k - 1, 1), max(k * (k - 1) // 2, 1)
    else:                          # regression, one-class: one row, one intercept
        rows, n_intercepts = 1, 1
    if dual.ndim != 2 or dual.shape != (rows, n_sv):
        raise _Fault(f"dual coefficients of shape {dual.shape} for {n_sv} support vectors")
    if intercept.ndim != 1 or len(intercept) != n_intercepts:
        raise _Fault(f"{len(intercept)} intercepts where {n_intercepts} belong")
    for name in ("_probA", "_probB", "probA_", "probB_"):
        a = getattr(svm, name, None)
        if a is not None and np.asarray(a).size not in (0, len(intercept)):
            raise _Fault(f"{name} of size {np.asarray(a).size} for {len(intercept)} class pairs")
    support = getattr(svm, "support_", None)
    if support is not None and len(support) != n_sv:
        raise _Fault("a support index per support vector expected")


def _check_sparse(m) -> None:
    """scipy rebuilds sparse matrices without checking them, and its compiled kernels trust the indices."""
    fmt = getattr(m, "format", None)
    try:
        if fmt in ("csr", "csc", "bsr"):
            m.check_format(full_check=True)
        elif fmt == "coo":
            rows, cols = m.shape
            if len(m.row) != len(m.col) or len(m.row) != len(m.data) or (len(m.row) and (
                    m.row.min() < 0 or m.col.min() < 0 or m.row.max() >= rows or m.col.max() >= cols)):
                raise ValueError("indices out of range")
        else:   # lil, dok, dia: formats no fitted model keeps; refused rather than checked halfway
            raise ValueError("a sparse format mlwarden does not load")
    except _Fault:
        raise
    except Exception as e:  # noqa: BLE001 - scipy's own checks raise ValueError; anything else is as bad
        raise _Fault(f"sparse {fmt} matrix: {str(e)[:100]}") from None


def _check_binary_tree(tree) -> None:
    state = tree.__getstate__()
    data, idx, node_data, node_bounds = state[0], state[1], state[2], state[3]
    n = len(data)
    if len(idx) != n or (len(idx) and ((idx < 0).any() or (idx >= n).any())):
        raise _Fault("an index array pointing outside the data")
    starts, ends = node_data["idx_start"], node_data["idx_end"]
    if ((starts < 0) | (ends > n) | (starts > ends)).any():
        raise _Fault("a node range outside the data")
    n_nodes = int(state[6])
    if len(node_data) != n_nodes or node_bounds.shape[1:2] != (n_nodes,) or data.ndim != 2 \
            or node_bounds.shape[2:] != data.shape[1:]:
        raise _Fault("node arrays of the wrong shape")
    inner = np.flatnonzero(node_data["is_leaf"] == 0)   # children of node i are 2i+1 and 2i+2
    if len(inner) and 2 * int(inner.max()) + 2 >= n_nodes:
        raise _Fault("an inner node whose children lie past the last node")
