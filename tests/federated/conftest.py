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


def threat_context(data, fed, tmp_path, seed=0, cache=None):
    import torch

    from mlwarden.core.target import TorchTarget
    from mlwarden.core.threat import Context
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    return Context(target=TorchTarget(model, data.n_classes, data.input_shape), data=data,
                   evidence_dir=tmp_path / "evidence" / "t", recipe=fed, seed=seed,
                   **({"cache": cache} if cache is not None else {}))


class CleanRuns(dict):
    """A Context cache whose clean federations outlive the test: threats/federated/common.py keys a clean run by
    ("federated-clean", the recipe's description, the seed), a deterministic function of those on the module's
    one data set (digits), so a test whose federation another test already ran clean reads it as an audit's
    second threat would; every other key stays the test's own."""

    def __init__(self, store: dict):
        super().__init__()
        self.store = store

    @staticmethod
    def shared(key) -> bool:
        return isinstance(key, tuple) and key[:1] == ("federated-clean",)

    def __contains__(self, key):
        return key in self.store if self.shared(key) else super().__contains__(key)

    def __getitem__(self, key):
        return self.store[key] if self.shared(key) else super().__getitem__(key)

    def __setitem__(self, key, value):
        if self.shared(key):
            self.store[key] = value
        else:
            super().__setitem__(key, value)


@pytest.fixture(scope="module")
def clean_runs():
    return {}


@pytest.fixture
def fed_ctx(digits, tmp_path, clean_runs):
    return lambda fed, seed=0: threat_context(digits, fed, tmp_path, seed, CleanRuns(clean_runs))
