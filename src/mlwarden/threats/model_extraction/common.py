"""What every extraction threat reports: agreement of the stolen copy with the victim on the test data
(1 - R_test) and on uniform random inputs (1 - R_unif), with intervals, and severity from the agreement
reached against the queries it took relative to the training-set size (Tramer et al. 2016)."""
from __future__ import annotations

import torch

from ...core.finding import Defense, Metric, Severity

EXTRACTION_FIX = Defense(
    "prediction API guards",
    "Return labels or rounded/top-k scores instead of full probabilities, require API keys, rate-limit and "
    "budget queries per key, and run the extraction detector; `mlwarden serve` applies these guards. "
    "Rounding raises the cost of equation solving but does not stop loss-minimisation attacks.",
    "mlwarden serve MODEL --output rounded --decimals 2 --api-key KEY --budget 10000",
)


def uniform_inputs(n: int, shape, low: float, high: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand((n, *shape), generator=g)


@torch.no_grad()
def agreement(target, stolen, x_test: torch.Tensor, n_uniform: int, space, seed: int) -> list[Metric]:
    """Label agreement on the test split and on uniform inputs; the victim's answers here are not counted
    as attack queries."""
    x_unif = uniform_inputs(n_uniform, x_test.shape[1:], space.low, space.high, seed + 99)
    out = []
    with target.uncounted():
        for name, x in (("agreement on test data (1 - R_test)", x_test), ("agreement on uniform inputs (1 - R_unif)", x_unif)):
            k = int((target.labels(x) == stolen(x).argmax(1)).sum())
            out.append(Metric.rate(name, k, len(x)))
    return out


def severity(test_agreement: float, queries: int, n_train: int) -> Severity:
    if test_agreement >= 0.99 and queries <= 0.1 * n_train:
        return Severity.CRITICAL
    if test_agreement >= 0.95 and queries <= n_train:
        return Severity.HIGH
    if test_agreement >= 0.90:
        return Severity.MEDIUM
    return Severity.LOW
