"""The poisoning tests train the same models more than once: the backdoor threat's clean model is `mnist_cnn`
(same recipe, data and seed), and the spectral-signature and activation-clustering sanitizers first train
the very model the BadNets test trains on the same poisoned data. Training is deterministic on the CPU (same
seed, same data: the same weights), so within a test session a plain fit (no hooks, nothing to start from)
is trained once and each later call in these modules gets a copy of it. Likewise the neural-cleanse threat's
scan of one model (its class and weights) on the same inputs: the BadNets model's, which harden's audit and
the state-dict half of the .pt2 test both run (the .pt2 module, another class, is scanned itself)."""
from __future__ import annotations

import copy

import pytest
import torch

from mlwarden.core.cache import key_of, tensor_digest
from mlwarden.core.recipe import Recipe

HOOKS = ("wrap", "batch_transform", "data_filter", "loss", "on_epoch", "repair", "inference")
_fitted: dict[str, tuple] = {}
_scanned: dict[str, object] = {}


def _plain(recipe: Recipe, kw: dict) -> bool:
    """A fit that only the recipe's described fields, the data and the seed decide."""
    named = f"{recipe.factory.__module__}:{getattr(recipe.factory, '__qualname__', '')}"
    return (type(recipe) is Recipe and all(getattr(recipe, h) is None for h in HOOKS)
            and all(kw.get(k) is None for k in ("wrap", "batch_transform", "on_epoch", "init"))
            and "<" not in named and (recipe.device in (None, "cpu")))


@pytest.fixture(autouse=True, scope="module")
def _fit_once():
    fit = Recipe.fit

    def once(self, x, y, n_classes, *, seed=0, **kw):
        if not _plain(self, kw):
            return fit(self, x, y, n_classes, seed=seed, **kw)
        key = key_of(self.describe(), str(x.dtype), str(y.dtype), tensor_digest(x, y), n_classes, seed)
        if key not in _fitted:   # with torch's global generator as the fit leaves it (fit seeds it)
            _fitted[key] = fit(self, x, y, n_classes, seed=seed, **kw), torch.get_rng_state()
        model, rng = _fitted[key]
        torch.set_rng_state(rng)
        return copy.deepcopy(model)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Recipe, "fit", once)
        yield


@pytest.fixture(autouse=True, scope="module")
def _scan_once():
    from mlwarden.threats.corruption import neural_cleanse
    scan = neural_cleanse.scan

    def once(model, x, y, n_classes, low, high, p, seed, check=None):
        state = list(model.state_dict().values())
        if not all(isinstance(t, torch.Tensor) for t in state):
            return scan(model, x, y, n_classes, low, high, p, seed, check=check)
        key = key_of(f"{type(model).__module__}.{type(model).__qualname__}", list(model.state_dict()),
                     tensor_digest(*state), tensor_digest(x, y), n_classes, low, high, p.model_dump(), seed)
        if key not in _scanned:
            _scanned[key] = scan(model, x, y, n_classes, low, high, p, seed, check=check)
        return copy.deepcopy(_scanned[key])

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(neural_cleanse, "scan", once)
        yield
