"""Minimal Linf adversarial examples for tree ensembles by mixed-integer linear programming (Kantchelian,
Tygar & Joseph 2016, "Evasion and Hardening of Tree Ensemble Classifiers", ICML, section 3).

Threat model: the attacker holds the model file (the trees: white-box on structure, no gradients needed);
Linf budget as a fraction of each feature's range; inputs stay inside the data's valid range and
integer-valued features stay whole. Exact: for every point the program finds the smallest eps (up to
`eps_max`) at which some input changes the booster's class, so robust accuracy at every eps up to eps_max
is certified, not an attack's upper bound, except at points where the solver hit its time limit (reported
as unresolved, never as robust).

The program (paper eq. 2-6): a binary predicate p[i,j] = [x_i < t_ij] for every distinct threshold of
feature i, with p[i,j] <= p[i,j+1]; leaf variables l in [0, 1] summing to one per tree, and for every
split node sum(l over its left subtree) <= p, sum(l over its right subtree) <= 1 - p; the margin of the
target class minus the true class's, as a sum of leaf values, at least `delta`; b at least the scaled
distance of every predicate that changes from x; minimise b. For L1 (and L2, on squared distances) one such
variable per feature and their sum is minimised (paper section 3.3). Solved with HiGHS through
`scipy.optimize.milp`. Each solution is mapped back to the nearest input of its leaf region and verified
by the booster itself (threat below): a solution the booster does not misclassify, or whose distance is
not the solver's, is a defect, never a success.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import Field

from ...core.finding import Check, Metric, Remedy, Severity, Status
from ...core.registry import register
from ...core.target import Access, RescaledTarget
from ...core.threat import Context, Params, Threat
from .common import WHITE_BOX_ATLAS, accuracy_metrics, eval_points, severity_from_ratio

NORMS = ("linf", "l1", "l2")
PATH_PER_LEAF = 16   # the program holds every leaf once per split above it: depths beyond 16 on average are refused
# the search caps, as fractions of eps_max, tried in turn: predicates beyond the cap are fixed, so a small
# cap is a much smaller program, and the first cap with a solution holds the exact minimum
CAP_STEPS = (0.125, 0.25, 0.5, 1.0)
SOLVER_TOL = 1e-5   # cap units: how far the solver's objective may sit from the exact distance (plus 1e-4 relative)


@dataclass
class MilpResult:
    """One point: `x_adv` the input found and `eps` its distance from x (fraction units, computed from the
    input itself); `solver_eps` the solver's objective for it (equal up to the solver's tolerances); `lower`
    what the solver proved (inf: no adversarial input within eps_max); `optimal` False at the time limit."""
    eps: float | None
    x_adv: np.ndarray | None
    lower: float
    optimal: bool
    seconds: float
    solver_eps: float | None = None


def distance(x_adv: np.ndarray, x: np.ndarray, scale: np.ndarray, norm: str) -> np.ndarray:
    """The norm of |x_adv - x| / scale per row (a feature of scale 0 cannot move: its term is 0 when unmoved)."""
    diff = np.abs(np.asarray(x_adv, np.float64) - x)
    step = np.divide(diff, scale, out=np.where(diff > 0, np.inf, 0.0), where=scale > 0)
    return step.max(-1) if norm == "linf" else step.sum(-1) if norm == "l1" else np.sqrt((step ** 2).sum(-1))


def solver_agrees(norm: str, eps: float, solver_eps: float, cap: float) -> bool:
    """The rebuilt input's distance against the solver's objective, within HiGHS's feasibility tolerances
    (1e-7 per constraint, 1e-6 on integrality) on distances in units of the cap (squared for l2)."""
    if norm == "l2":
        return abs(eps ** 2 - solver_eps ** 2) / cap ** 2 <= SOLVER_TOL + 1e-4 * (eps / cap) ** 2
    return abs(eps - solver_eps) / cap <= SOLVER_TOL + 1e-4 * eps / cap


@dataclass(frozen=True)
class _Feature:
    index: int
    cuts: np.ndarray    # sorted distinct thresholds T: the model goes left iff x < T (in float32)
    below: np.ndarray   # the largest valid value < each T
    first: int          # the predicate index of cuts[0]


def _as_cut(t: np.ndarray, strict: bool, integer: bool) -> np.ndarray:
    """Splits as `x < T` on float32 inputs: XGBoost's float32 `x < t` as is, LightGBM's float64 `x <= t` as
    x < the next float32 above t; on integer-valued features as x < a whole number."""
    t = np.asarray(t, np.float64)
    if integer:
        return np.ceil(t.astype(np.float32).astype(np.float64)) if strict else np.floor(t) + 1
    if strict:
        return t.astype(np.float32).astype(np.float64)
    f32 = t.astype(np.float32)
    return np.where(f32.astype(np.float64) <= t, np.nextafter(f32, np.float32(np.inf)), f32).astype(np.float64)


def _cuts(ens, integer: np.ndarray) -> dict[int, np.ndarray]:
    """The sorted distinct cuts of every feature the trees split on."""
    raw: dict[int, list[float]] = {}
    for t in ens.trees:
        for n in np.flatnonzero(t.left >= 0):
            raw.setdefault(int(t.feature[n]), []).append(float(t.threshold[n]))
    return {f: np.unique(_as_cut(np.asarray(ts), ens.strict, bool(integer[f]))) for f, ts in raw.items()}


class _Program:
    """The sample-independent part of the program: variables, tree constraints, leaf values per group."""

    def __init__(self, ens, integer: np.ndarray, norm: str = "linf"):
        from scipy import sparse
        if norm not in NORMS:
            raise ValueError(f"norm {norm!r}: the program is written for {', '.join(NORMS)}")
        self.ens, self.sparse, self.norm = ens, sparse, norm
        self.features, k = [], 0
        for f, cut in sorted(_cuts(ens, integer).items()):
            below = cut - 1 if integer[f] else np.nextafter(cut.astype(np.float32), np.float32(-np.inf)).astype(
                np.float64)
            self.features.append(_Feature(f, cut, below, k))
            k += len(cut)
        self.n_pred = k
        where = {ft.index: ft for ft in self.features}
        rows, cols, vals, lb, ub = [], [], [], [], []

        def row(entries, lo, hi):
            r = len(lb)
            for c, v in entries:
                rows.append(r), cols.append(c), vals.append(v)
            lb.append(lo), ub.append(hi)

        for ft in self.features:                      # p[i,j] <= p[i,j+1]
            for j in range(len(ft.cuts) - 1):
                row([(ft.first + j, 1.0), (ft.first + j + 1, -1.0)], -np.inf, 0.0)
        self.leaf_value, self.leaf_group, leaf = [], [], self.n_pred
        for t in ens.trees:
            ids = {}
            for n in t.leaves:
                ids[int(n)] = leaf
                self.leaf_value.append(float(t.value[n]))
                self.leaf_group.append(t.group)
                leaf += 1
            row([(v, 1.0) for v in ids.values()], 1.0, 1.0)
            for n in np.flatnonzero(t.left >= 0):     # a split: the leaves under each side
                ft = where[int(t.feature[n])]
                cut = _as_cut(t.threshold[n:n + 1], ens.strict, bool(integer[ft.index]))[0]
                pred = ft.first + int(np.searchsorted(ft.cuts, cut))
                for side, sign in ((t.left[n], 1.0), (t.right[n], -1.0)):
                    under = [ids[m] for m in _subtree_leaves(t, int(side))]
                    if sign > 0:
                        row([(c, 1.0) for c in under] + [(pred, -1.0)], -np.inf, 0.0)
                    else:
                        row([(c, 1.0) for c in under] + [(pred, 1.0)], -np.inf, 1.0)
        # ... and the distance: one b for linf (b >= each feature's), one per feature for l1 and l2 (summed; l2
        # sums squared distances, paper section 3.3)
        self.leaf_end = leaf
        self.n_var = leaf + (1 if norm == "linf" else len(self.features))
        self.leaf_value, self.leaf_group = np.asarray(self.leaf_value), np.asarray(self.leaf_group)
        self.static = (rows, cols, vals, lb, ub)

    def solve(self, x, y, target, scale, low, high, eps_cap, time_limit, delta):
        from scipy.optimize import Bounds, LinearConstraint, milp
        ens = self.ens
        rows, cols, vals, lb, ub = (list(a) for a in self.static)
        p_lo, p_hi = np.zeros(self.n_pred), np.ones(self.n_pred)
        r = len(lb)
        for k, ft in enumerate(self.features):
            xi, w = float(x[ft.index]), float(scale[ft.index])
            lo, hi = min(float(low[ft.index]), xi), max(float(high[ft.index]), xi)
            now = xi < ft.cuts                       # the predicates at x
            cost = np.where(now, ft.cuts - xi, xi - ft.below) / w if w > 0 else np.full(len(ft.cuts), np.inf)
            dist = self.leaf_end + (0 if self.norm == "linf" else k)
            for j, c in enumerate(cost):
                v = ft.first + j
                if c > eps_cap or ft.cuts[j] <= lo or ft.cuts[j] > hi:
                    p_lo[v] = p_hi[v] = float(now[j])   # too far, or across it is outside the valid range
                    continue
                c = (c / eps_cap) ** (2 if self.norm == "l2" else 1)   # in units of the cap: O(1) for the solver
                # x_i < T now: leaving needs x'_i >= T, d + c p >= c; else x'_i < T needs x'_i <= below(T), d - c p >= 0
                rows.extend((r, r)), cols.extend((dist, v)), vals.extend((1.0, c if now[j] else -c))
                lb.append(c if now[j] else 0.0), ub.append(np.inf)
                r += 1
        leaves = np.arange(self.n_pred, self.leaf_end)
        if ens.n_groups == 1:   # binary: the margin must cross zero towards the other class
            sign = 1.0 if y == 0 else -1.0
            coef, need = sign * self.leaf_value, delta - sign * float(ens.base[0])
        else:
            coef = np.where(self.leaf_group == target, self.leaf_value, 0.0) - \
                np.where(self.leaf_group == y, self.leaf_value, 0.0)
            need = delta - float(ens.base[target] - ens.base[y])
        keep = coef != 0
        rows.extend([r] * int(keep.sum())), cols.extend(leaves[keep].tolist()), vals.extend(coef[keep].tolist())
        lb.append(need), ub.append(np.inf)
        cap = 1.0
        n_dist = self.n_var - self.leaf_end
        if n_dist > 1:   # l1, l2: the summed distance within the cap
            rows.extend([r + 1] * n_dist), cols.extend(range(self.leaf_end, self.n_var)), vals.extend([1.0] * n_dist)
            lb.append(0.0), ub.append(cap)
        a = self.sparse.csr_array((vals, (rows, cols)), shape=(len(lb), self.n_var))
        c = np.zeros(self.n_var)
        c[self.leaf_end:] = 1.0
        integrality = np.zeros(self.n_var)
        integrality[:self.n_pred] = 1
        bounds = Bounds(np.concatenate([p_lo, np.zeros(self.n_var - self.n_pred)]),
                        np.concatenate([p_hi, np.ones(self.leaf_end - self.n_pred), np.full(n_dist, cap)]))
        res = milp(c, constraints=LinearConstraint(a, lb, ub), integrality=integrality, bounds=bounds,
                   options={"time_limit": max(time_limit, 1e-3), "disp": False, "mip_rel_gap": 1e-6})
        back = (lambda v: eps_cap * float(np.sqrt(max(v, 0.0)))) if self.norm == "l2" else \
            (lambda v: eps_cap * float(v))
        bound = getattr(res, "mip_dual_bound", None)   # what the solver proved (optimal: within its gap)
        return (res.status, None if res.x is None else back(res.fun), res.x,
                back(bound) if bound is not None and np.isfinite(bound) else None)

    def input_of(self, sol: np.ndarray, x: np.ndarray, low, high) -> np.ndarray:
        """The input nearest x in the leaf region the predicates of `sol` choose, inside [low, high]."""
        out = np.asarray(x, np.float64).copy()
        p = np.round(sol[:self.n_pred]).astype(bool)
        for ft in self.features:
            i = ft.index
            m = int((~p[ft.first:ft.first + len(ft.cuts)]).sum())   # x' sits in [cuts[m-1], cuts[m])
            lo = max(ft.cuts[m - 1] if m else -np.inf, min(float(low[i]), x[i]))
            hi = min(ft.below[m] if m < len(ft.cuts) else np.inf, max(float(high[i]), x[i]))
            out[i] = np.clip(x[i], lo, hi)
        return out.astype(np.float32)


def _subtree_leaves(t, node: int) -> list[int]:
    out, stack = [], [node]
    while stack:
        n = stack.pop()
        if t.left[n] < 0:
            out.append(n)
        else:
            stack += [int(t.left[n]), int(t.right[n])]
    return out


def kantchelian_attack(ensemble, x: np.ndarray, y: np.ndarray, eps_max: float, *, norm: str = "linf", scale=None,
                       low=None, high=None, integer=None, time_limit: float = 10.0, delta: float = 1e-4,
                       should_stop=None) -> list[MilpResult]:
    """Minimal adversarial examples against `ensemble` (io/tree_ensemble.TreeEnsemble) for the rows of x
    (n, d) with labels y. Distances are the `norm` (linf, l1 or l2) of (x'_i - x_i) / scale_i (scale: each
    feature's range; 1 by default), searched up to eps_max; x' stays within [low, high] per feature and whole
    on `integer` features.
    `time_limit`: seconds per point (a multiclass point splits it over its target classes)."""
    x = np.asarray(x, np.float32).reshape(len(x), -1)
    d = x.shape[1]
    full = lambda v, fill: np.broadcast_to(np.asarray(fill if v is None else v, np.float64), (d,))
    scale, low, high = full(scale, 1.0), full(low, -np.inf), full(high, np.inf)
    integer = np.broadcast_to(np.asarray(False if integer is None else integer, bool), (d,))
    prog = _Program(ensemble, integer, norm)
    results = []
    for xi, yi in zip(x, np.asarray(y).reshape(-1)):
        if should_stop is not None:
            should_stop()
        t0 = time.monotonic()
        targets = [None] if ensemble.n_groups == 1 else [k for k in range(ensemble.n_groups) if k != int(yi)]
        best, best_x, lower, optimal = None, None, np.inf, True
        for i, k in enumerate(targets):
            floor = 0.0   # this class needs more than `floor` (proven by the smaller caps tried before)
            for cap in [eps_max * f for f in CAP_STEPS]:
                cap = cap if best is None else min(cap, best)
                if cap <= floor:
                    break
                left = time_limit - (time.monotonic() - t0)
                status, value, sol, bound = prog.solve(xi, int(yi), k, scale, low, high, cap,
                                                       left / (len(targets) - i), delta)
                if status in (0, 1) and sol is not None and (best is None or value < best):
                    best, best_x = value, prog.input_of(sol, xi, low, high)
                    exact = float(distance(best_x, xi, scale, norm))
                if status == 2:   # no adversarial input of this class within this cap: try the next one
                    floor = cap
                    continue
                if status == 0:
                    lower = min(lower, value if bound is None else min(bound, value))
                else:             # 1: the time limit; anything else: no answer
                    optimal = False
                    lower = min(lower, max(floor, bound if status == 1 and bound is not None else 0.0))
                break
        results.append(MilpResult(None if best is None else exact, best_x, lower, optimal, time.monotonic() - t0,
                                  best))
    return results


TREE_HARDENING = Remedy(
    "robust tree training",
    "Retrain the ensemble on the adversarial examples this attack finds (adversarial boosting, Kantchelian et "
    "al. 2016 section 5) or with robust splits (Chen et al. 2019, 'Robust Decision Trees Against Adversarial "
    "Examples'); fewer, shallower trees and monotone constraints also widen the minimal eps. No mlwarden "
    "defence retrains boosters yet.")


class TreeMilpParams(Params):
    eps: float = Field(0.05, gt=0, le=1, description="the audited budget, a fraction of each feature's range")
    norm: str = Field("linf", pattern="^(linf|l1|l2)$", description="linf (the default), l1 or l2 (paper sec. 3.3)")
    eps_max: float = Field(0.3, gt=0, le=1, description="search cap: points still standing there are robust up to it")
    n_samples: int = Field(50, gt=0)
    time_limit_s: float = Field(5.0, gt=0, description="solver seconds per point; over it the point is unresolved")
    max_leaves: int = Field(5000, gt=0, description="larger ensembles are skipped (the program grows with leaves)")
    curve_points: int = Field(16, ge=2, le=200)


def booster_of(target):
    """(the booster's scores function, the target on raw features, the map from the audit's per-feature [0, 1]
    coordinates to raw features or None) for a target backed by parsed-tree-capable booster, else None."""
    denorm = None
    if isinstance(target, RescaledTarget):
        target, denorm = target.inner, target.denormalize
    fn = getattr(target, "fn", None)
    return (fn, target, denorm) if callable(getattr(fn, "ensemble", None)) else None


@register
class TreeMilp(Threat):
    """Minimal Linf (or L1, L2) adversarial examples for XGBoost/LightGBM ensembles by MILP (Kantchelian et al. 2016)."""

    name = "tree-milp"
    family = "model-tricking"
    title = "Tree-ensemble evasion, exact minimal perturbation (Kantchelian MILP)"
    needs = Access.LABELS
    atlas = WHITE_BOX_ATLAS
    Params = TreeMilpParams
    remedy = TREE_HARDENING
    # quick: about 0.1 s a point on 10 trees of depth 3 (2 shared cores), at most n_samples x time_limit_s in all
    profiles = {"quick": {"n_samples": 30, "time_limit_s": 1.0, "max_leaves": 2000},
                "standard": {"n_samples": 200, "time_limit_s": 10.0, "max_leaves": 20000},
                "thorough": {"n_samples": 500, "time_limit_s": 60.0, "max_leaves": 100000}}

    def skip_reason(self, ctx: Context) -> str | None:
        if booster_of(ctx.target) is None:
            return "needs the trees of an XGBoost or LightGBM model file (this target is not one)"
        return super().skip_reason(ctx)

    def run(self, ctx: Context, p: TreeMilpParams):
        from ...io.tree_ensemble import EnsembleMismatch
        fn, inner, denorm = booster_of(ctx.target)
        x, y = eval_points(ctx.data, p.n_samples, ctx.seed)
        raw = denorm(x) if denorm is not None else x.reshape(len(x), -1)
        raw = raw.detach().reshape(len(x), -1).numpy().astype(np.float32)
        low, high, scale, integer = self._space(ctx, denorm, raw.shape[1])
        try:
            ens = fn.ensemble(raw)
        except EnsembleMismatch as e:
            return self.finding(ctx, p, status=Status.FAILED, severity=Severity.INFO,
                                headline=f"the trees could not be read exactly: {e}", error=str(e))
        if ens.n_leaves > p.max_leaves or ens.path_length > PATH_PER_LEAF * p.max_leaves:
            return self.finding(ctx, p, status=Status.SKIPPED, severity=Severity.INFO,
                                headline=f"skipped: {len(ens.trees)} trees with {ens.n_leaves} leaves at depths summing "
                                         f"to {ens.path_length}, over max_leaves={p.max_leaves} (x{PATH_PER_LEAF} for "
                                         "the depths; raise it, or use the standard/thorough profile)")
        shape = (-1, *inner.input_shape)
        to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).reshape(shape)
        clean_ok = (inner.labels(to_t(raw)) == y).numpy()
        att = np.flatnonzero(clean_ok)
        cap = max(p.eps_max, p.eps)
        res = kantchelian_attack(ens, raw[att], y[att].numpy(), cap, norm=p.norm, scale=scale, low=low, high=high,
                                 integer=integer, time_limit=p.time_limit_s, should_stop=ctx.check_time)
        lower, upper, defects = self._verify(inner, to_t, raw[att], y[att], res, low, high, scale, integer, p.norm,
                                             cap)
        n = len(y)
        lo_all, up_all = np.full(n, -np.inf), np.full(n, -np.inf)   # misclassified points: broken at eps 0
        lo_all[att], up_all[att] = lower, upper
        grid = sorted({*np.linspace(0, cap, p.curve_points).round(6).tolist(), p.eps})
        curve = [self._at(lo_all, up_all, e) for e in grid]
        _, unresolved = self._at(lo_all, up_all, p.eps)
        metrics = accuracy_metrics(torch.from_numpy(clean_ok), torch.from_numpy(lo_all > p.eps))
        metrics[1].reliable = unresolved == 0
        found = np.array([r.eps for r in res if r.eps is not None and r.optimal])
        secs = np.array([r.seconds for r in res])
        timed_out = sum(not r.optimal for r in res)
        metrics += [Metric.rate("unresolved_at_eps", unresolved, n),
                    Metric.rate("solver_timed_out", timed_out, max(len(res), 1)),
                    Metric("verification_failures", float(defects), len(res), unit="points")]
        if len(found):
            metrics.append(Metric("median_minimal_eps", float(np.median(found)), len(found), unit="fraction of range"))
        if len(secs):
            metrics += [Metric("median_solve_seconds", float(np.median(secs)), len(secs), unit="s"),
                        Metric("max_solve_seconds", float(secs.max()), len(secs), unit="s")]
        checks = [Check("verification-failed", defects > 0,
                        f"{defects} of {len(res)} solutions were not misclassified by the booster, left the valid "
                        "range or missed the solver's distance (counted unresolved, not broken)",
                        "report it: the parsed trees disagree with the booster on those inputs"),
                  Check("solver-time-limit", timed_out > 0,
                        f"{timed_out} of {len(res)} points hit the {p.time_limit_s:g} s limit (counted unresolved, "
                        "never robust)", "raise time_limit_s ([threats.tree-milp] in the config) or use a larger profile")]
        clean, rob = metrics[0].value, metrics[1].value
        status = Status.UNRELIABLE if defects or unresolved else Status.OK
        what = (f"minimal {p.norm} eps by MILP on {len(ens.trees)} trees ({ens.n_leaves} leaves): accuracy "
                f"{100 * clean:.1f}% -> {100 * rob:.1f}% certified at eps={p.eps:g}")
        if unresolved:
            what += f", {unresolved} of {n} points unresolved (solver limit or verification)"
        if len(found):
            what += f"; median minimal eps {np.median(found):.3g}"
        return self.finding(
            ctx, p, status=status, severity=severity_from_ratio(rob, clean), headline=what, metrics=metrics,
            checks=checks, evidence=self._figure(ctx, grid, curve, n, p),
            details={"curve": [{"eps": e, "robust_accuracy": r / n, "unresolved": u, "n": n} for e, (r, u)
                               in zip(grid, curve)],
                     "minimal_eps": [None if r.eps is None else r.eps for r in res],
                     "trees": len(ens.trees), "leaves": ens.n_leaves, "library": ens.library})

    @staticmethod
    def _space(ctx, denorm, d):
        """Per-feature (low, high, scale, integer) in raw feature units."""
        if denorm is not None:
            low = denorm.low.double().numpy()
            scale = denorm.width.double().numpy()
            return low, low + scale, scale, denorm.integer.numpy()
        s = ctx.data.space
        if s.per_feature:
            lo, hi = s.feature_low.double().numpy(), s.feature_high.double().numpy()
            return lo, hi, hi - lo, s.integer.numpy()
        width = s.width if np.isfinite(s.width) and s.width > 0 else 1.0
        return np.full(d, s.low), np.full(d, s.high), np.full(d, width), np.zeros(d, bool)

    @staticmethod
    def _verify(inner, to_t, x, y, res, low, high, scale, integer, norm, cap):
        """(lower, upper) eps bounds per point after the booster itself checks every solution."""
        lower = np.array([r.lower for r in res], np.float64)
        upper = np.array([np.inf if r.eps is None else r.eps for r in res], np.float64)
        has = np.flatnonzero(~np.isinf(upper))
        if not len(has):
            return lower, upper, 0
        adv = np.stack([res[i].x_adv for i in has])
        fooled = (inner.labels(to_t(adv)) != y[has]).numpy()
        dist = distance(adv, x[has], scale, norm)
        inside = ((adv >= np.minimum(low, x[has]) - 1e-6) & (adv <= np.maximum(high, x[has]) + 1e-6)).all(1)
        whole = (adv[:, integer] == np.round(adv[:, integer])).all(1)
        exact = np.array([abs(d - u) <= 1e-9 * (1 + u) and solver_agrees(norm, u, res[i].solver_eps, cap)
                          for d, u, i in zip(dist, upper[has], has)])
        bad = ~(fooled & inside & whole & exact)
        lower[has[bad]], upper[has[bad]] = -np.inf, np.inf   # a defect: neither broken nor robust
        return lower, upper, int(bad.sum())

    @staticmethod
    def _at(lower, upper, e):
        """(points proven robust at eps e, points neither proven robust nor broken at e)."""
        return int((lower > e).sum()), int(((upper > e) & (lower <= e)).sum())

    def _figure(self, ctx, grid, curve, n, p) -> list[str]:
        from ...core.stats import clopper_pearson
        from ...plots import security_curve
        accs = [r / n for r, _ in curve]
        cis = [clopper_pearson(r, n) for r, _ in curve]
        path = ctx.evidence_path("security_curve.png")
        security_curve(path, grid, accs, [c[0] for c in cis], [c[1] for c in cis], norm=p.norm,
                       title=f"Certified robust accuracy (Kantchelian MILP, n={n})")
        return [ctx.rel(path)]
