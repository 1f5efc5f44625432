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

from ..core.cache import cache_dir, key_of, load_state, save_state, tensor_digest
from ..core.recipe import Recipe


@dataclass
class ReferenceSet:
    models: list[nn.Module]
    in_mask: np.ndarray  # (n_models, n_examples) bool: example j was in model k's training half
    trained: int         # trained in this call; the others came from the cache
    seconds: float


def balanced_masks(n_models: int, n: int, seed: int) -> np.ndarray:
    """(n_models, n) membership with each example IN for exactly n_models // 2 models."""
    rng = np.random.default_rng(seed)
    ranks = rng.random((n_models, n)).argsort(axis=0).argsort(axis=0)
    return ranks < n_models // 2


def train_reference_models(recipe: Recipe, x: torch.Tensor, y: torch.Tensor, n_classes: int, n_models: int,
                           seed: int, backend, check_time: Callable[[], None] | None = None,
                           on_model: Callable[[int], None] | None = None,
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
    key = key_of("reference-models/1", recipe.describe(), digest or tensor_digest(x, y), n_classes, n_models, seed)
    folder = cache_dir() / "reference-models" / key
    trained = []

    def one(k: int) -> dict:
        if check_time is not None:
            check_time()
        path = folder / f"model-{k}.pt"
        state = load_state(path)
        if state is None:
            idx = np.flatnonzero(masks[k])
            xs, ys = subset(idx) if subset is not None else (x[torch.from_numpy(idx)], y[torch.from_numpy(idx)])
            state = recipe.fit(xs, ys, n_classes, seed=seed * 1_000 + k + 1).state_dict()
            save_state(state, path)
            trained.append(k)
        if on_model is not None:
            on_model(k)
        return state

    states = backend.map(one, list(range(n_models)))
    models = []
    for state in states:
        m = recipe.make_model(tuple(input_shape or x.shape[1:]), n_classes)
        m.load_state_dict(state)
        models.append(m.eval())
    return ReferenceSet(models, masks, len(trained), time.monotonic() - t0)
