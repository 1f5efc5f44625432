"""Federations on digits: small, real, seconds each."""
from __future__ import annotations

import pytest


def federation(recipe=None, **kw):
    from mlwarden.audit.demo import federated_client_recipe
    from mlwarden.federated.recipe import FederatedRecipe
    return FederatedRecipe.of(recipe or federated_client_recipe(), **kw)


def run(data, fed, seed, adversary=None, backend=None):
    from mlwarden.federated.simulation import simulate
    return simulate(fed, data.x_train, data.y_train, data.n_classes, seed=seed, test=(data.x_test, data.y_test),
                    adversary=adversary, backend=backend)


def threat_context(data, fed, tmp_path, seed=0):
    import torch

    from mlwarden.core.target import TorchTarget
    from mlwarden.core.threat import Context
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    return Context(target=TorchTarget(model, data.n_classes, data.input_shape), data=data,
                   evidence_dir=tmp_path / "evidence" / "t", recipe=fed, seed=seed)


@pytest.fixture
def fed_ctx(digits, tmp_path):
    return lambda fed, seed=0: threat_context(digits, fed, tmp_path, seed)
