from __future__ import annotations

import pytest
import torch

from mlwarden.core.errors import UserError
from mlwarden.federated.partition import partition


@pytest.mark.parametrize("kind", ["iid", "dirichlet", "shards"])
def test_every_point_once_and_seeded(digits, kind):
    parts = partition(digits.y_train, 10, kind, seed=3)
    allidx = torch.cat(parts).sort().values
    assert torch.equal(allidx, torch.arange(len(digits.y_train)))
    again = partition(digits.y_train, 10, kind, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(parts, again))


def test_non_iid_clients_see_few_classes(digits):
    y = digits.y_train
    classes = lambda parts: sum(len(torch.unique(y[p])) for p in parts) / len(parts)  # noqa: E731
    assert classes(partition(y, 10, "iid")) > 9.5
    shards = partition(y, 10, "shards", shards=2)
    assert max(len(torch.unique(y[p])) for p in shards) <= 4   # a shard may straddle two classes
    assert classes(shards) <= 3
    assert classes(partition(y, 10, "dirichlet", alpha=0.1)) < classes(partition(y, 10, "dirichlet", alpha=10))


def test_impossible_splits_are_user_errors(digits):
    with pytest.raises(UserError, match="cannot split"):
        partition(digits.y_train[:10], 8)
    with pytest.raises(UserError, match="alpha"):
        partition(digits.y_train, 4, "dirichlet", alpha=0)
    with pytest.raises(UserError, match="unknown partition"):
        partition(digits.y_train, 4, "bogus")


def test_fedsgd_and_client_sampling_train(digits):
    """FedSGD (one full-batch step per client and round) learns, and sampling takes the asked share of clients."""
    from mlwarden.core.recipe import BUILTIN_RECIPES
    from mlwarden.federated.recipe import FederatedRecipe
    from mlwarden.federated.simulation import simulate
    fed = FederatedRecipe.of(BUILTIN_RECIPES["logreg"].with_(lr=0.5), clients=6, rounds=20, mode="fedsgd",
                             sample=0.5)
    h = simulate(fed, digits.x_train, digits.y_train, 10, seed=0, test=(digits.x_test, digits.y_test))
    assert all(len(s) == 3 for s in h.sampled) and len({tuple(s) for s in h.sampled}) > 1
    assert h.accuracy[-1] > 0.7 and h.accuracy[-1] > h.accuracy[0]
