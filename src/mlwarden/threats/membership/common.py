"""What every membership scorer sees: the attacked model's outputs and the reference models' outputs on
the same examples, with which references trained on which example. Higher score = more likely member."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch


@dataclass
class Pool:
    """What membership is inferred over: the examples (or sequence ids) a signal is computed on, which of
    them the audited model trained on, and how a reference model trains on a subset of them."""
    x: torch.Tensor
    y: torch.Tensor
    target_in: np.ndarray    # (N,) bool
    n_classes: int
    subset: Callable[[np.ndarray], tuple[torch.Tensor, torch.Tensor]] | None = None  # default x[idx], y[idx]
    input_shape: tuple[int, ...] | None = None   # of what subset returns
    groups: dict[str, np.ndarray] = field(default_factory=dict)  # (N,) bool masks reported on their own
    digest: str | None = None   # names the content in the reference models' cache key (default: x and y)


@dataclass
class AttackInput:
    logp: np.ndarray       # (N, C) log-probabilities of the attacked model
    phi: np.ndarray        # (N,) logit-scaled confidence on the true label
    ref_logp: np.ndarray   # (R, N, C) reference models
    ref_phi: np.ndarray    # (R, N)
    ref_in: np.ndarray     # (R, N) bool
    y: np.ndarray          # (N,) labels
    ref_valid: np.ndarray | None = None  # (R, N) bool: which reference outputs to use (default all)

    def __post_init__(self):
        if self.ref_valid is None:
            self.ref_valid = np.ones_like(self.ref_in, dtype=bool)

    @property
    def use_in(self) -> np.ndarray:
        return self.ref_in & self.ref_valid

    @property
    def use_out(self) -> np.ndarray:
        return ~self.ref_in & self.ref_valid

    @property
    def logp_y(self) -> np.ndarray:
        return self.logp[np.arange(len(self.y)), self.y]

    @property
    def ref_logp_y(self) -> np.ndarray:
        return self.ref_logp[:, np.arange(len(self.y)), self.y]


def equal_counts(ref_in: np.ndarray, seed: int) -> np.ndarray:
    """A validity mask keeping, for every example, as many IN as OUT reference models (dropping random ones
    from the larger side). When one of the balanced reference models is itself the attacked model, the
    others hold one more OUT than IN for its members and one more IN for its non-members; left alone, that
    difference in estimation noise biases every score against members."""
    rng = np.random.default_rng(seed)
    r = rng.random(ref_in.shape)
    min_count = np.minimum(ref_in.sum(0), (~ref_in).sum(0))
    rank_in = np.where(ref_in, r, np.inf).argsort(0).argsort(0)
    rank_out = np.where(~ref_in, r, np.inf).argsort(0).argsort(0)
    keep = (ref_in & (rank_in < min_count)) | (~ref_in & (rank_out < min_count))
    return keep


def masked_mean_std(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-column mean and std of `values` over the rows where mask is True; also the count."""
    cnt = mask.sum(axis=0)
    safe = np.maximum(cnt, 1)
    mean = np.where(mask, values, 0).sum(axis=0) / safe
    var = np.where(mask, (values - mean) ** 2, 0).sum(axis=0) / np.maximum(cnt - 1, 1)
    return mean, np.sqrt(var), cnt
