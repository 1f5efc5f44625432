"""LOSS threshold attack (Yeom et al. 2018, "Privacy Risk in Machine Learning: Analyzing the Connection
to Overfitting"): members have lower loss, so the score is minus the cross-entropy loss. Needs no
reference models; it is the baseline every other attack must beat."""
from __future__ import annotations

import numpy as np

from .common import AttackInput

NAME = "loss"
NEEDS_REFERENCES = False


def score(a: AttackInput) -> np.ndarray:
    return a.logp_y
