"""Confidence intervals for the rates the report shows."""
from __future__ import annotations

import math

from scipy.stats import beta


def clopper_pearson(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Exact two-sided (1 - alpha) binomial interval for k successes in n trials (Clopper & Pearson 1934)."""
    if n <= 0:
        return (0.0, 1.0)
    lo = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return (lo, hi)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for k of n (the building block of Newcombe's interval for a difference)."""
    if n <= 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def difference_interval(k1: int, n1: int, k2: int, n2: int, z: float = 1.96) -> tuple[float, float, float]:
    """p2 - p1 for two independent proportions, with Newcombe's hybrid score interval (Newcombe 1998,
    method 10): it keeps its coverage at rates near 0 or 1, where the Wald interval does not."""
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson(k1, n1, z)
    l2, u2 = wilson(k2, n2, z)
    d = p2 - p1
    return d, d - math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2), d + math.sqrt((u2 - p2) ** 2 + (p1 - l1) ** 2)


def lower_bound(k: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson lower confidence bound on a binomial rate."""
    return 0.0 if k == 0 or n <= 0 else float(beta.ppf(alpha, k, n - k + 1))


def mean_interval(values, alpha: float = 0.05) -> tuple[float, float, float]:
    """(mean, low, high): Student-t interval of the mean of a small sample (each value one independent
    trial, e.g. one target's retrained victim)."""
    from scipy.stats import t as student
    v = [float(x) for x in values]
    n = len(v)
    mean = sum(v) / n
    if n < 2:
        return mean, float("-inf"), float("inf")
    sd = (sum((x - mean) ** 2 for x in v) / (n - 1)) ** 0.5
    half = float(student.ppf(1 - alpha / 2, n - 1)) * sd / n ** 0.5
    return mean, mean - half, mean + half


def auc_interval(auc: float, n_pos: int, n_neg: int, z: float = 1.96) -> tuple[float, float]:
    """Normal interval of a ROC AUC with the standard error of Hanley & McNeil (1982, "The meaning and use of
    the area under a ROC curve"), which treats the scored examples as independent."""
    if n_pos <= 0 or n_neg <= 0:
        return (0.0, 1.0)
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)) / (n_pos * n_neg)
    half = z * math.sqrt(max(var, 0.0))
    return (max(0.0, auc - half), min(1.0, auc + half))


def members_above(members, nonmembers, fpr: float = 0.01) -> int:
    """How many member scores lie above the (floor(fpr n) + 1)-th highest of the n non-member scores: the
    strictest threshold that lets at most floor(fpr n) non-members through (privacy/roc.py `summarize`). The
    threshold by a partial sort (linear): the diff's bootstrap calls this thousands of times."""
    import numpy as np
    neg = np.asarray(nonmembers, dtype=np.float64)
    allowed = int(np.floor(fpr * len(neg)))
    thr = np.partition(neg, len(neg) - 1 - allowed)[len(neg) - 1 - allowed] if allowed < len(neg) else -np.inf
    return int((np.asarray(members, dtype=np.float64) > thr).sum())


def tpr_at_fpr(members, nonmembers, fpr: float = 0.01) -> float:
    """The share of members above that threshold (`members_above`)."""
    return members_above(members, nonmembers, fpr) / len(members)


def paired_tpr_difference(a: tuple, b: tuple, fpr: float = 0.01, draws: int = 2000,
                          seed: int = 0) -> tuple[float, float, float]:
    """TPR at `fpr` of scores b minus that of scores a, each a (members, non-members) pair of arrays over the
    same points, with a 95% paired bootstrap interval: every draw resamples the members and the non-members
    (the same indices on both sides) and sets each side's threshold again, so the interval holds the noise
    of the few non-members that fix a low-FPR threshold, which a binomial interval on the members omits."""
    import numpy as np
    (am, an), (bm, bn) = ((np.asarray(x, dtype=np.float64) for x in pair) for pair in (a, b))
    rng = np.random.default_rng(seed)
    diffs = np.empty(draws)
    for i in range(draws):
        im, inn = rng.integers(0, len(am), len(am)), rng.integers(0, len(an), len(an))
        diffs[i] = tpr_at_fpr(bm[im], bn[inn], fpr) - tpr_at_fpr(am[im], an[inn], fpr)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return tpr_at_fpr(bm, bn, fpr) - tpr_at_fpr(am, an, fpr), float(lo), float(hi)
