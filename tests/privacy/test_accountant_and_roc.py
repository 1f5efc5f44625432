"""Accountant wiring and the ROC metrics that every membership number goes through."""
import numpy as np
import pytest

from mlwarden.privacy.accountant import epsilon_for, noise_for
from mlwarden.privacy.roc import summarize


def test_rdp_needs_more_noise_than_prv_for_the_same_target():
    # q = 0.285, 120 steps, eps = 8, delta = 1e-5: RDP needs sigma ~2.19, PRV ~2.06
    rdp, used_rdp = noise_for(8, 1e-5, 0.285, 120, "rdp")
    prv, used_prv = noise_for(8, 1e-5, 0.285, 120, "prv")
    assert (used_rdp, used_prv) == ("rdp", "prv")
    assert rdp == pytest.approx(2.19, abs=0.02)
    assert prv == pytest.approx(2.06, abs=0.02)
    # for the same (sigma, q, steps, delta) the RDP epsilon is at least the PRV one
    for sigma in (1.0, 2.06):
        assert epsilon_for(sigma, 1e-5, 0.285, 120, "rdp") >= epsilon_for(sigma, 1e-5, 0.285, 120, "prv")


def test_tpr_at_low_fpr_counts_and_flags_too_few_nonmembers():
    rng = np.random.default_rng(0)
    members, nonmembers = rng.normal(1.0, 1, 3000), rng.normal(0.0, 1, 3000)
    s = summarize(np.r_[members, nonmembers], np.r_[np.ones(3000, bool), np.zeros(3000, bool)])
    assert 0.74 < s.auc < 0.79  # Phi(1/sqrt 2) = 0.76
    k, n = s.tpr_at[0.01]
    assert n == 3000 and 0.05 < k / n < 0.15  # Gaussian shift 1 at 1% FPR: TPR ~ 0.09
    tpr1 = next(m for m in s.metrics("x") if m.name == "x TPR at 1% FPR")
    tpr01 = next(m for m in s.metrics("x") if m.name == "x TPR at 0.1% FPR")
    assert tpr1.reliable and not tpr01.reliable  # 3000 non-members allow 30 false positives at 1%, 3 at 0.1%
    assert tpr1.ci_low < tpr1.value < tpr1.ci_high
    chance = summarize(rng.random(4000), rng.random(4000) < 0.5)
    assert abs(chance.auc - 0.5) < 0.04
