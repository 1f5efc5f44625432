"""Reference (shadow) models for membership inference.

Each model is trained through the subject's recipe on a random half of the data pool, chosen so that
every example is IN for exactly half of the models (the design of LiRA, Carlini et al. 2022,
"Membership Inference Attacks From First Principles"). Models are cached on disk one by one, keyed by
the recipe, the data and the seed, so an interrupted or repeated audit does not retrain them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..core.backend import rounds
from ..core.cache import cache_dir, key_of, load_state, save_state, tensor_digest
from ..core.recipe import Recipe


@dataclass
class ReferenceSet:
    models: list[nn.Module]
    in_mask: np.ndarray  # (n_models, n_examples) bool: example j was in model k's training half
    trained: int         # trained in this call; the others came from the cache
    seconds: float
    identity: dict       # what makes the set (recipe, data, count, seed): two runs with one identity share it


def balanced_masks(n_models: int, n: int, seed: int) -> np.ndarray:
    """(n_models, n) membership with each example IN for exactly n_models // 2 models."""
    rng = np.random.default_rng(seed)
    ranks = rng.random((n_models, n)).argsort(axis=0).argsort(axis=0)
    return ranks < n_models // 2


def fit_reference(k: int, shared) -> dict:
    """Reference model k's weights: trained by the recipe on the pool examples its mask marks IN. A pure
    function of (k, shared), so any backend can run it."""
    recipe, x, y, n_classes, masks, seed, subset = shared
    idx = np.flatnonzero(masks[k])
    xs, ys = subset(idx) if subset is not None else (x[torch.from_numpy(idx)], y[torch.from_numpy(idx)])
    model = recipe.fit(xs, ys, n_classes, seed=seed * 1_000 + k + 1)
    return model.state_dict() if isinstance(model, nn.Module) else model   # a model retrained as itself, whole


def train_reference_models(recipe: Recipe, x: torch.Tensor, y: torch.Tensor, n_classes: int, n_models: int,
                           seed: int, backend, check_time: Callable[[], None] | None = None,
                           subset: Callable[[np.ndarray], tuple[torch.Tensor, torch.Tensor]] | None = None,
                           input_shape: tuple[int, ...] | None = None, digest: str | None = None) -> ReferenceSet:
    """`n_models` models, model k trained on the pool examples its mask marks IN. The pool is x, y; with
    `subset`, an example is a unit of several training examples (a text sequence and its windows) and
    subset(indices) gives the training set of those units, of `input_shape`, and `digest` names their content
    in the cache key."""
    if n_models < 2 or n_models % 2:
        raise ValueError("the number of reference models must be even and at least 2")
    t0 = time.monotonic()
    masks = balanced_masks(n_models, len(x), seed)
    shared = (recipe, x, y, n_classes, masks, seed, subset)
    data = digest or tensor_digest(x, y)
    identity = {"recipe": recipe.name, "recipe_key": key_of(recipe.describe()), "data": data,
                "count": n_models, "seed": seed}
    if getattr(recipe, "as_itself", False):   # an estimator or a booster (io/estimator_recipe.py): fast to retrain,
        models = [None] * n_models             # and never cached (its cache file would be a pickle to load)
        for chunk, results in rounds(backend, fit_reference, list(range(n_models)), shared, check_time):
            for k, model in zip(chunk, results):
                models[k] = model
        return ReferenceSet(models, masks, n_models, time.monotonic() - t0, identity)
    key = key_of("reference-models/1", recipe.describe(), data, n_classes, n_models, seed)
    folder = cache_dir() / "reference-models" / key
    states = {k: load_state(folder / f"model-{k}.pt") for k in range(n_models)}
    todo = [k for k, state in states.items() if state is None]
    for chunk, results in rounds(backend, fit_reference, todo, shared, check_time):
        for k, state in zip(chunk, results):   # cached round by round: an interrupted run keeps what it trained
            save_state(state, folder / f"model-{k}.pt")   # the caller writes the cache, never a worker
            states[k] = state
    states = [states[k] for k in range(n_models)]
    models = []
    for state in states:
        m = recipe.make_model(tuple(input_shape or x.shape[1:]), n_classes)
        m.load_state_dict(state)
        models.append(m.eval())
    return ReferenceSet(models, masks, len(todo), time.monotonic() - t0, identity)
