"""Decision-tree extraction by path finding (Tramer et al. 2016, section 4.2), adapted to an API that
returns the leaf's class probabilities, as a scikit-learn server does, instead of a leaf identifier.

Tramer et al. walk from leaf to leaf using leaf identities. Probabilities are not identities: pure
leaves all answer [1, 0] (or [0, 1]), so "same answer" does not mean "same leaf". This version never
uses an answer as an identity, only "the answer changed, so a split lies between these two points":
it splits the input box recursively. In a box, one batched request scans the axis lines through the
box's centre (a coarse grid per feature) and a few random probes; the first change found along an axis
is binary-searched over float32 values (the values the model sees: scikit-learn trees compare float32
features) to the first value on the far side, which is one of the tree's own thresholds, and the box is
cut there: the left half ends at the float32 just below it, the right half starts at it, so a threshold
is never cut twice (cutting between float64 midpoints did, into zero-width regions). A probe that differs from the centre without an axis change on the
centre's lines is reached by an axis-by-axis walk from the centre, whose first change is again on one
axis. A box whose scans and probes all agree is a leaf region. Every cut is a true threshold, so the
copy is the victim's function wherever the probes saw it; a region smaller than the probes' spacing
can be missed, and the report says how many boxes were resolved.

Before any of this, a tree check: a tree's answers take few distinct values and do not move under tiny
steps; a model whose answers vary continuously (a logistic regression) is reported as skipped, at the cost
of the check's queries, instead of spending the whole budget."""
from __future__ import annotations

import numpy as np
import torch
from pydantic import Field

from ...core.files import torch_bytes, write_file
from ...core.finding import Metric, Severity, Status
from ...core.registry import register
from ...core.target import Access
from ...core.threat import Context, Params
from .common import ExtractionThreat, agreement, agreement_text, copy_verdict


class Pp(Params):
    grid: int = Field(16, ge=2, description="points of the coarse scan along each feature")
    probes: int = Field(8, ge=0, description="random points per box checked against the centre")
    bisections: int = Field(40, ge=4, description="binary-search steps per threshold (32 reach float32 resolution)")
    max_queries: int = Field(200_000, ge=100)
    max_boxes: int = Field(2_000, ge=1)
    n_uniform: int = Field(10_000, ge=100)


class BoxModel(torch.nn.Module):
    """The stolen tree as disjoint closed float32 boxes with their answers; an input takes the box that
    contains it (the nearest one for an input outside every box)."""

    def __init__(self, lows: np.ndarray, highs: np.ndarray, values: np.ndarray):
        super().__init__()
        self.register_buffer("lows", torch.from_numpy(lows).float())
        self.register_buffer("highs", torch.from_numpy(highs).float())
        self.register_buffer("values", torch.from_numpy(values).float())

    def forward(self, x):
        x = x.reshape(len(x), -1)[:, None, :]
        gap = (torch.relu(self.lows[None] - x) + torch.relu(x - self.highs[None])).sum(-1)
        return torch.log(self.values[gap.argmin(1)].clamp_min(1e-9))


class _Oracle:
    def __init__(self, target, shape, budget):
        self.target, self.shape, self.budget, self.used = target, shape, budget, 0

    def __call__(self, flat: np.ndarray) -> np.ndarray:
        if self.used + len(flat) > self.budget:
            raise RuntimeError("query budget reached")
        self.used += len(flat)
        x = torch.from_numpy(flat.astype(np.float32)).reshape(len(flat), *self.shape)
        return self.target.scores(x).double().numpy()


def _differs(a, b) -> np.ndarray:
    return np.any(np.abs(a - b) > 1e-6, axis=-1)


def _key(v: float) -> int:
    """float32 values as integers in the same order (adjacent floats differ by 1)."""
    bits = int(np.array(v, dtype=np.float32).view(np.int32))
    return bits if bits >= 0 else -(bits & 0x7FFFFFFF)


def _value(k: int) -> float:
    bits = k if k >= 0 else (-k) | 0x80000000
    return float(np.array(bits & 0xFFFFFFFF, dtype=np.uint32).view(np.float32))


def _below(t: float) -> float:
    return float(np.nextafter(np.float32(t), np.float32(-np.inf)))


def _threshold(f, x: np.ndarray, i: int, a: float, b: float, steps: int) -> float:
    """Binary search over float32 values of feature i between a and b, whose answers differ, until they are
    adjacent floats: the cut, i.e. the smaller float32 value of the upper side."""
    row = lambda v: np.where(np.arange(len(x)) == i, v, x)[None]  # noqa: E731
    va = f(row(_value(_key(a))))[0]
    ka, kb = _key(a), _key(b)
    for _ in range(steps):
        if abs(kb - ka) <= 1:
            break
        km = (ka + kb) // 2
        if _differs(f(row(_value(km)))[0], va):
            kb = km
        else:
            ka = km
    return _value(max(ka, kb))


def find_cut(f, lo: np.ndarray, hi: np.ndarray, p: Pp, rng) -> tuple[int, float] | None:
    """(feature, threshold) of some split inside the box [lo, hi] (closed, float32), or None when the box
    looks constant. A threshold is returned only when it cuts the box into two non-empty parts."""
    d = len(lo)
    c = ((lo + hi) / 2).astype(np.float32).astype(np.float64)
    steps = np.linspace(0, 1, p.grid + 1)
    lines = np.repeat(c[None], d * len(steps), 0)
    for i in range(d):
        lines[i * len(steps):(i + 1) * len(steps), i] = np.float32(lo[i] + steps * (hi[i] - lo[i]))
    probes = (lo + rng.random((p.probes, d)) * (hi - lo)).astype(np.float32).astype(np.float64)
    ans = f(np.vstack([c[None], lines, probes]))
    v, line_ans, probe_ans = ans[0], ans[1:1 + len(lines)], ans[1 + len(lines):]

    def inside(i, t):
        return lo[i] < t <= hi[i]

    for i in range(d):
        seg = line_ans[i * len(steps):(i + 1) * len(steps)]
        for k in np.flatnonzero(_differs(seg[1:], seg[:-1])):
            t = _threshold(f, c, i, lines[i * len(steps) + k, i], lines[i * len(steps) + k + 1, i], p.bisections)
            if inside(i, t):
                return i, t
    for r, vr in zip(probes, probe_ans):
        if not _differs(vr, v):
            continue
        path = np.repeat(c[None], d + 1, 0)
        for i in range(d):
            path[i + 1:, i] = r[i]
        walk = f(path)
        for k in np.flatnonzero(_differs(walk[1:], walk[:-1])):
            t = _threshold(f, path[k], int(k), c[k], r[k], p.bisections)
            if inside(int(k), t):
                return int(k), t
    return None


def looks_like_a_tree(f, lo: np.ndarray, hi: np.ndarray, rng, n: int = 32) -> tuple[bool, str]:
    """A tree answers from a few leaves and is unmoved by tiny steps: among n random points, distinct answers
    are fewer than n, or a step of 1e-4 of the range leaves most answers unchanged."""
    x = (lo + rng.random((n, len(lo))) * (hi - lo)).astype(np.float32).astype(np.float64)
    nudged = np.clip(x + 1e-4 * (hi - lo) * rng.choice([-1.0, 1.0], x.shape), lo, hi)
    a = f(np.vstack([x, nudged]))
    first, second = a[:n], a[n:]
    distinct = len({tuple(np.round(r, 6)) for r in first})
    moved = int(_differs(first, second).sum())
    why = f"{distinct} distinct answers at {n} random points; a step of 1e-4 of the range changed {moved} of {n}"
    return not (distinct == n and moved > n // 2), why


@register
class PathFinding(ExtractionThreat):
    """Tramer et al. 2016 path finding for decision trees, from the class probabilities the API returns."""
    name = "extract-path-finding"
    title = "Model extraction of decision trees by path finding"
    needs = Access.SCORES
    Params = Pp

    def run(self, ctx: Context, p: Pp):
        s, shape = ctx.data.space, ctx.data.input_shape
        f = _Oracle(ctx.target, shape, p.max_queries)
        d = int(np.prod(shape))
        rng = np.random.default_rng(ctx.seed)
        q0 = ctx.target.queries
        box = (np.full(d, np.float32(s.low), dtype=np.float64), np.full(d, np.float32(s.high), dtype=np.float64))
        tree, why = looks_like_a_tree(f, *box, rng)
        if not tree:
            paid = ctx.target.queries - q0
            return self.finding(ctx, p, status=Status.SKIPPED, severity=Severity.INFO, queries=paid,
                                headline=f"skipped: not a decision tree ({why}); path finding copies trees, the "
                                         f"other extraction threats apply ({paid} queries spent on the check)",
                                details={"tree_check": why})
        todo, leaves, complete = [box], [], True
        try:
            while todo:
                ctx.check_time()
                if len(leaves) + len(todo) > p.max_boxes:
                    raise RuntimeError("box limit reached")
                lo, hi = todo.pop()
                cut = find_cut(f, lo, hi, p, rng)
                if cut is None:
                    leaves.append((lo, hi, f(((lo + hi) / 2)[None])[0]))
                    continue
                i, t = cut
                left_hi, right_lo = hi.copy(), lo.copy()
                left_hi[i], right_lo[i] = _below(t), t      # closed float32 boxes that share no value
                todo += [(lo, left_hi), (right_lo, hi)]
        except RuntimeError:
            complete = False
        for lo, hi in todo:  # unresolved boxes answer with their centre's class
            leaves.append((lo, hi, f(((lo + hi) / 2)[None])[0]) if f.used < f.budget else
                          (lo, hi, np.full(ctx.data.n_classes, 1.0 / ctx.data.n_classes)))
        paid = ctx.target.queries - q0  # an HTTP target answers repeated points from its cache
        stolen = BoxModel(*(np.stack(col) for col in zip(*leaves)))
        a = agreement(ctx.target, stolen, ctx.data.x_test, p.n_uniform, s, ctx.seed)
        metrics = [*a.metrics, Metric("queries", paid, unit="queries"), Metric("leaf regions", len(leaves))]
        path = ctx.evidence_path("stolen-tree-boxes.pt")
        write_file(path, torch_bytes(stolen.state_dict()))   # bytes, then the write primitive
        verdict, severity, constant = copy_verdict(a, paid, len(ctx.data.x_train))
        metrics.append(constant)
        head = (f"{len(leaves)} leaf regions recovered with {paid} queries ({verdict}): "
                f"{agreement_text(verdict, a, constant)}" + ("" if complete else " (stopped at its limit)"))
        return self.finding(ctx, p, status=Status.OK, severity=severity,
                            headline=head, metrics=metrics, evidence=[ctx.rel(path)], queries=paid,
                            details={"complete": complete, "leaf_regions": len(leaves)})
