"""The aggregation rules against Flower's own implementations on the same updates (equal to 1e-6), and what
each rule does to an outlier."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mlwarden.core.registry import get_defense
from mlwarden.federated.aggregate import RoundInfo, fedavg

agg = pytest.importorskip("flwr.server.strategy.aggregate", reason="the [flower] extra (CI installs it)")


def _updates(k=11, p=300, bad=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = 0.05 + 0.1 * torch.randn(k, p, generator=g, dtype=torch.float64)
    u[:bad] = -3.0 * u[:bad] + 0.5            # two outliers
    w = torch.randint(20, 200, (k,), generator=g).to(torch.float64)
    return u, w


def _flower(u, w):
    return [([row.numpy().reshape(20, 15)], int(n)) for row, n in zip(u, w)]


def _info(k):
    return RoundInfo(0, k, float(k), torch.Generator().manual_seed(0))


def _rule(name, **params):
    d = get_defense(name)
    return d.rule(d.Params(**params))


@pytest.mark.parametrize("seed", [0, 1])
def test_rules_equal_flowers(seed):
    u, w = _updates(seed=seed)
    res = _flower(u, w)
    cases = {
        "fedavg": (fedavg(u, w), agg.aggregate(res)),
        "median": (_rule("median")(u, w, _info(11)), agg.aggregate_median(res)),
        "trimmed-mean": (_rule("trimmed-mean", beta=0.2)(u, w, _info(11)), agg.aggregate_trimmed_avg(res, 0.2)),
        "krum": (_rule("krum", f=2)(u, w, _info(11)), agg.aggregate_krum(res, 2, 0)),
        "multi-krum": (_rule("multi-krum", f=2, keep=5)(u, w, _info(11)), agg.aggregate_krum(res, 2, 5)),
        "bulyan": (_rule("bulyan", f=2)(u, w, _info(11)), agg.aggregate_bulyan(list(res), 2, agg.aggregate_krum, to_keep=0)),
    }
    for name, (ours, theirs) in cases.items():
        assert np.abs(ours.numpy() - theirs[0].flatten()).max() < 1e-6, name


def test_robust_rules_resist_the_outliers_and_fedavg_does_not():
    u, w = _updates(bad=0)
    honest = u[2:].mean(0)
    spread = float((u[2:] - honest).norm(dim=1).max())     # the farthest honest update from the honest mean
    u[:2] = 20.0                                           # two attackers far away
    err = {n: float((_rule(n)(u, w, _info(11)) - honest).norm()) for n in ("median", "trimmed-mean", "krum", "bulyan")}
    assert all(e <= spread for e in err.values()), (err, spread)
    assert float((fedavg(u, w) - honest).norm()) > 20 * spread


def test_krum_refuses_more_attackers_than_it_tolerates():
    from mlwarden.core.errors import UserError
    u, w = _updates(k=6)
    with pytest.raises(UserError, match="more than this rule tolerates"):
        _rule("krum", f=3)(u, w, _info(6))


def test_fltrust_drops_updates_against_the_root_direction():
    u, w = _updates()
    info = _info(11)
    info.root_update = u[5].clone()
    out = _rule("fltrust")(u, w, info)
    flipped = -u[5:6]
    info2 = _info(2)
    info2.root_update = u[5].clone()
    assert torch.allclose(_rule("fltrust")(torch.cat([u[5:6], flipped]), w[:2], info2), u[5])   # zero trust
    assert abs(float(out.norm()) - float(u[5].norm())) < float(u[5].norm())   # rescaled to the root's norm


def test_norm_clipping_bounds_a_boosted_update():
    u, w = _updates(bad=0)
    u[0] = u[0] * 100
    out = _rule("norm-clipping")(u, w, _info(11))
    assert float(out.norm()) <= float(u[1:].norm(dim=1).median()) + 1e-9
    assert float(fedavg(u, w).norm()) > 5 * float(out.norm())


def test_dp_fedavg_noise_and_epsilon():
    from mlwarden.defenses.dp_fedavg import client_epsilon
    u, w = _updates(bad=0)
    quiet = _rule("dp-fedavg", clip=0.5, noise_multiplier=0.0)(u, w, _info(11))
    noisy = _rule("dp-fedavg", clip=0.5, noise_multiplier=1.0)(u, w, _info(11))
    sd = float((noisy - quiet).std())
    assert abs(sd - 1.0 * 0.5 / 11) < 0.2 * 0.5 / 11     # noise_multiplier x clip / expected clients
    e1 = client_epsilon(1.0, 1e-3, 0.5, 10)["epsilon"]
    e2 = client_epsilon(2.0, 1e-3, 0.5, 10)["epsilon"]
    assert 0 < e2 < e1 < float("inf")
