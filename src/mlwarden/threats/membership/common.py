"""What every membership scorer sees: the attacked model's outputs and the reference models' outputs on
the same examples, with which references trained on which example. Higher score = more likely member."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class AttackInput:
    logp: np.ndarray       # (N, C) log-probabilities of the attacked model
    phi: np.ndarray        # (N,) logit-scaled confidence on the true label
    ref_logp: np.ndarray   # (R, N, C) reference models
    ref_phi: np.ndarray    # (R, N)
    ref_in: np.ndarray     # (R, N) bool
    y: np.ndarray          # (N,) labels

    @property
    def logp_y(self) -> np.ndarray:
        return self.logp[np.arange(len(self.y)), self.y]

    @property
    def ref_logp_y(self) -> np.ndarray:
        return self.ref_logp[:, np.arange(len(self.y)), self.y]


def masked_mean_std(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-column mean and std of `values` over the rows where mask is True; also the count."""
    cnt = mask.sum(axis=0)
    safe = np.maximum(cnt, 1)
    mean = np.where(mask, values, 0).sum(axis=0) / safe
    var = np.where(mask, (values - mean) ** 2, 0).sum(axis=0) / np.maximum(cnt - 1, 1)
    return mean, np.sqrt(var), cnt
