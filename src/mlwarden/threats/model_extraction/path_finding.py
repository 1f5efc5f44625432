"""Decision-tree extraction by path finding (Tramer et al. 2016, section 4.2), adapted to an API that
returns the leaf's class probabilities, as a scikit-learn server does, instead of a leaf identifier.

Tramer et al. walk from leaf to leaf using leaf identities. Probabilities are not identities: pure
leaves all answer [1, 0] (or [0, 1]), so "same answer" does not mean "same leaf". This version never
uses an answer as an identity, only "the answer changed, so a split lies between these two points":
it splits the input box recursively. In a box, one batched request scans the axis lines through the
box's centre (a coarse grid per feature) and a few random probes; the first change found along an axis
is binary-searched to float32 resolution, which is one of the tree's own thresholds, and the box is cut
there (each half is again a tree). A probe that differs from the centre without an axis change on the
centre's lines is reached by an axis-by-axis walk from the centre, whose first change is again on one
axis. A box whose scans and probes all agree is a leaf region. Every cut is a true threshold, so the
copy is the victim's function wherever the probes saw it; a region smaller than the probes' spacing
can be missed, and the report says how many boxes were resolved."""
from __future__ import annotations

import numpy as np
import torch
from pydantic import Field

from ...core.finding import Metric, Status
from ...core.registry import register
from ...core.target import Access
from ...core.threat import Context, Params
from ...core.severity import extraction
from .common import ExtractionThreat, agreement


class Pp(Params):
    grid: int = Field(16, ge=2, description="points of the coarse scan along each feature")
    probes: int = Field(8, ge=0, description="random points per box checked against the centre")
    bisections: int = Field(24, ge=4, description="binary-search steps per threshold (float32 resolution)")
    max_queries: int = Field(200_000, ge=100)
    max_boxes: int = Field(2_000, ge=1)
    n_uniform: int = Field(10_000, ge=100)


class BoxModel(torch.nn.Module):
    """The stolen tree as disjoint boxes with their answers; an input takes the box that contains it."""

    def __init__(self, lows: np.ndarray, highs: np.ndarray, values: np.ndarray):
        super().__init__()
        self.register_buffer("lows", torch.from_numpy(lows).float())
        self.register_buffer("highs", torch.from_numpy(highs).float())
        self.register_buffer("values", torch.from_numpy(values).float())

    def forward(self, x):
        x = x.reshape(len(x), -1)[:, None, :]
        # half-open boxes [low, high) except at the top of the range; the gap is 0 inside a box
        gap = (torch.relu(self.lows[None] - x) + torch.relu(x - self.highs[None])).sum(-1)
        gap = gap + 1e-6 * (x >= self.highs[None]).any(-1) * (self.highs[None] < self.highs.max(0).values).any(-1)
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


def _threshold(f, x: np.ndarray, i: int, a: float, b: float, steps: int) -> float:
    """Binary search on feature i between x[i]=a and x[i]=b, whose answers differ; the cut between them."""
    va = f(np.where(np.arange(len(x)) == i, a, x)[None])[0]
    for _ in range(steps):
        mid = (a + b) / 2
        if _differs(f(np.where(np.arange(len(x)) == i, mid, x)[None])[0], va):
            b = mid
        else:
            a = mid
    return float(np.float32(b))  # the first float32 value on b's side


def find_cut(f, lo: np.ndarray, hi: np.ndarray, p: Pp, rng) -> tuple[int, float] | None:
    """(feature, threshold) of some split inside the box, or None when the box looks constant."""
    d = len(lo)
    c = (lo + hi) / 2
    steps = np.linspace(0, 1, p.grid + 1)
    lines = np.repeat(c[None], d * len(steps), 0)
    for i in range(d):
        lines[i * len(steps):(i + 1) * len(steps), i] = lo[i] + steps * (hi[i] - lo[i]) * (1 - 1e-7)
    probes = lo + rng.random((p.probes, d)) * (hi - lo) * (1 - 1e-7)
    ans = f(np.vstack([c[None], lines, probes]))
    v, line_ans, probe_ans = ans[0], ans[1:1 + len(lines)], ans[1 + len(lines):]
    for i in range(d):
        seg = line_ans[i * len(steps):(i + 1) * len(steps)]
        changed = np.flatnonzero(_differs(seg[1:], seg[:-1]))
        if len(changed):
            k = changed[0]
            return i, _threshold(f, c, i, lines[i * len(steps) + k, i], lines[i * len(steps) + k + 1, i],
                                 p.bisections)
    for r, vr in zip(probes, probe_ans):
        if not _differs(vr, v):
            continue
        path = np.repeat(c[None], d + 1, 0)
        for i in range(d):
            path[i + 1:, i] = r[i]
        walk = f(path)
        k = int(np.flatnonzero(_differs(walk[1:], walk[:-1]))[0])
        return k, _threshold(f, path[k], k, c[k], r[k], p.bisections)
    return None


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
        todo, leaves, complete = [(np.full(d, s.low), np.full(d, s.high))], [], True
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
                left_hi[i], right_lo[i] = t, t
                todo += [(lo, left_hi), (right_lo, hi)]
        except RuntimeError:
            complete = False
        for lo, hi in todo:  # unresolved boxes answer with their centre's class
            leaves.append((lo, hi, f(((lo + hi) / 2)[None])[0]) if f.used < f.budget else
                          (lo, hi, np.full(ctx.data.n_classes, 1.0 / ctx.data.n_classes)))
        paid = ctx.target.queries - q0  # an HTTP target answers repeated points from its cache
        stolen = BoxModel(*(np.stack(col) for col in zip(*leaves)))
        metrics = agreement(ctx.target, stolen, ctx.data.x_test, p.n_uniform, s, ctx.seed)
        metrics.append(Metric("queries", paid, unit="queries"))
        metrics.append(Metric("leaf regions", len(leaves)))
        path = ctx.evidence_path("stolen-tree-boxes.pt")
        torch.save(stolen.state_dict(), path)
        test = metrics[0]
        head = (f"{len(leaves)} leaf regions recovered with {paid} queries: {test.text()} test agreement, "
                f"{metrics[1].text()} on uniform inputs" + ("" if complete else " (stopped at its limit)"))
        return self.finding(ctx, p, status=Status.OK, severity=extraction(test.value, paid, len(ctx.data.x_train)),
                            headline=head, metrics=metrics, evidence=[ctx.rel(path)], queries=paid,
                            details={"complete": complete, "leaf_regions": len(leaves)})
