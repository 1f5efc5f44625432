"""ROC metrics for membership inference: AUC, balanced accuracy, and TPR at a fixed low FPR with a
Clopper-Pearson interval and the number of non-members behind it (Carlini et al. 2022 argue that the
low-FPR regime is the one that matters)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from ..core.finding import Metric
from ..core.stats import auc_interval, members_above

MIN_FALSE_POSITIVES = 5  # a TPR at FPR f is a result only if n_nonmembers * f allows this many false positives


@dataclass
class RocSummary:
    auc: float
    balanced_accuracy: float
    tpr_at: dict[float, tuple[int, int]]  # fpr -> (true positives, members) at the threshold allowing fpr
    n_members: int
    n_nonmembers: int
    fpr: np.ndarray
    tpr: np.ndarray

    def metrics(self, prefix: str) -> list[Metric]:
        n = self.n_members + self.n_nonmembers
        lo, hi = auc_interval(self.auc, self.n_members, self.n_nonmembers)
        out = [Metric(f"{prefix} AUC", self.auc, n, lo, hi, "auc"), Metric(f"{prefix} balanced accuracy", self.balanced_accuracy, n)]
        for f, (k, npos) in self.tpr_at.items():
            reliable = self.n_nonmembers * f >= MIN_FALSE_POSITIVES
            out.append(Metric.rate(f"{prefix} TPR at {100 * f:g}% FPR", k, npos, reliable=reliable))
        return out


def summarize(scores: np.ndarray, is_member: np.ndarray, fprs=(0.01, 0.001)) -> RocSummary:
    scores = np.asarray(scores, dtype=np.float64)
    is_member = np.asarray(is_member, dtype=bool)
    scores = np.nan_to_num(scores, nan=-np.inf)
    fpr, tpr, _ = roc_curve(is_member, scores)
    pos, neg = scores[is_member], scores[~is_member]
    # the strictest threshold that lets at most floor(f n) non-members through, for each FPR f
    tpr_at = {f: (members_above(pos, neg, f), len(pos)) for f in fprs}
    return RocSummary(float(roc_auc_score(is_member, scores)), float(np.max(1 - (fpr + (1 - tpr)) / 2)),
                      tpr_at, len(pos), len(neg), fpr, tpr)


def downsample(fpr: np.ndarray, tpr: np.ndarray, points: int = 80) -> list[list[float]]:
    """[fpr, tpr] at `points` false-positive rates spaced evenly on a log axis from 1e-4 to 1: enough to
    redraw the curve (e.g. before/after overlays) without storing every threshold."""
    grid = np.logspace(-4, 0, points)
    return [grid.tolist(), np.interp(grid, fpr, tpr).tolist()]
