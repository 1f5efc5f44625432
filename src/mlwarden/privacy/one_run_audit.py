"""Empirical privacy audit with one training run (Steinke, Nasr, Jagielski 2023, "Privacy Auditing with
One (1) Training Run").

m canaries (here: random inputs from the valid input range with random labels, which a model can only
fit by memorising them and which do not fight the real data) are each included with probability 1/2; one
model is trained; the auditor scores every canary (log-probability of its wrong label), guesses IN for
the k highest and OUT for the k lowest (k fixed in advance) and counts correct guesses v of r = 2k.
Under (eps, delta)-DP, v is dominated by Binomial(r, e^eps / (1 + e^eps)) plus a delta term (the
paper's Theorem 3.3), so the largest eps whose p-value stays below 5% is a 95% lower bound on the
epsilon the training run actually satisfies. A bound above the accountant's epsilon means the DP
training pipeline is broken."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import binom

from ..core.measure import accuracy
from ..core.recipe import Recipe


def p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """P[at least v of r guesses correct] for an (eps, delta)-DP training run with m canaries."""
    q = 1.0 / (1.0 + math.exp(-eps))
    beta = float(binom.sf(v - 1, r, q))
    if delta == 0 or v == 0:
        return min(beta, 1.0)
    i = np.arange(1, v + 1)
    window = np.cumsum(binom.pmf(v - i, r, q))  # P[v - i <= Binomial(r, q) < v]
    alpha = float(np.max(window / i))
    return min(beta + alpha * delta * 2 * m, 1.0)


def epsilon_lower_bound(m: int, r: int, v: int, delta: float, confidence: float = 0.95) -> float:
    """Largest eps rejected at the given confidence (0 when even eps = 0 is not rejected)."""
    p = 1 - confidence
    if p_value(m, r, v, 0.0, delta) >= p:
        return 0.0
    lo, hi = 0.0, 1.0
    while p_value(m, r, v, hi, delta) < p and hi < 100:
        lo, hi = hi, 2 * hi
    for _ in range(50):
        mid = (lo + hi) / 2
        if p_value(m, r, v, mid, delta) < p:
            lo = mid
        else:
            hi = mid
    return lo


@dataclass
class OneRunAudit:
    epsilon_lower_bound: float
    m: int
    guesses: int
    correct: int
    delta: float
    seconds: float
    accuracy: float  # of the audit run's model on the test split

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def one_run_audit(recipe: Recipe, x_train, y_train, x_test, y_test, n_classes: int, *, delta: float,
                  low: float, high: float, integer_inputs: bool = False, m: int = 500,
                  guess_fraction: float = 0.1, seed: int = 0) -> OneRunAudit:
    """Train once through `recipe` on the training data plus m canaries, each included with probability
    1/2. Canary inputs are uniform in [low, high] (integers for token inputs), labels uniform."""
    t0 = time.monotonic()
    g = torch.Generator().manual_seed(seed)
    shape = (m,) + tuple(x_train.shape[1:])
    if integer_inputs:
        x_can = torch.randint(int(low), int(high) + 1, shape, generator=g).to(x_train.dtype)
    else:
        x_can = (low + (high - low) * torch.rand(shape, generator=g)).to(x_train.dtype)
    y_can = torch.randint(0, n_classes, (m,), generator=g)
    included = torch.rand(m, generator=g) < 0.5
    x = torch.cat([x_train, x_can[included]])
    y = torch.cat([y_train, y_can[included]])
    model = recipe.fit(x, y, n_classes, seed=seed)
    with torch.no_grad():
        scores = torch.log_softmax(model(x_can), 1)[torch.arange(m), y_can].numpy()
    acc = accuracy(model, x_test, y_test).value
    k = max(1, int(guess_fraction * m))  # fixed before looking at the scores
    order = np.argsort(-scores)
    inc = included.numpy()
    correct = int(inc[order[:k]].sum() + (~inc[order[-k:]]).sum())
    lb = epsilon_lower_bound(m, 2 * k, correct, delta)
    return OneRunAudit(lb, m, 2 * k, correct, delta, time.monotonic() - t0, acc)
