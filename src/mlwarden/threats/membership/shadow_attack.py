"""Shadow-model attack (Shokri et al. 2017, "Membership Inference Attacks Against Machine Learning
Models"): an attack classifier learns IN versus OUT from the reference (shadow) models' outputs, where
membership is known, and is applied to the attacked model's outputs. Shokri et al. train one attack
network per class on the full probability vector; this uses one logistic model on class-independent
features (sorted top log-probabilities, true-label confidence, correctness), which transfers across
classes and trains in milliseconds."""
from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .common import AttackInput

NEEDS_REFERENCES = True
MAX_ROWS = 20_000


def features(logp: np.ndarray, phi: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per example: its top (up to) three log-probabilities, the signal phi and whether it is classified right
    (a binary model has two log-probabilities, so four features)."""
    top = -np.sort(-logp, axis=-1)[..., :3]
    correct = (logp.argmax(axis=-1) == y).astype(np.float64)
    return np.concatenate([np.clip(top, -50, 0), np.clip(phi, -50, 50)[..., None], correct[..., None]], axis=-1)


def score(a: AttackInput, seed: int = 0) -> np.ndarray:
    valid = a.ref_valid.reshape(-1)
    f_ref = features(a.ref_logp, a.ref_phi, a.y[None, :])
    f_ref = f_ref.reshape(-1, f_ref.shape[-1])[valid]
    lab = a.ref_in.reshape(-1)[valid]
    rng = np.random.default_rng(seed)
    if len(lab) > MAX_ROWS:
        keep = rng.choice(len(lab), MAX_ROWS, replace=False)
        f_ref, lab = f_ref[keep], lab[keep]
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    clf.fit(f_ref, lab)
    return clf.decision_function(features(a.logp, a.phi, a.y))
