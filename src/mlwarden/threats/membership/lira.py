"""Likelihood-ratio attack, LiRA (Carlini et al. 2022, "Membership Inference Attacks From First
Principles"). The logit-scaled confidence phi of an example is modelled as Gaussian over reference
models that trained on it (IN) and that did not (OUT).

online:  score = log N(phi; mu_in, s_in) - log N(phi; mu_out, s_out)
offline: score = log P[Z < phi], Z ~ N(mu_out, s_out)   (only OUT models: no training per query)
Fixed variance shares one s across examples (the paper's choice with fewer than 64 reference models);
per-example variance estimates s for each example."""
from __future__ import annotations

import numpy as np
from scipy.stats import norm

from .common import AttackInput, masked_mean_std

NEEDS_REFERENCES = True
VARIANTS = {"lira-online": (True, False), "lira-online-per-example": (True, True),
            "lira-offline": (False, False), "lira-offline-per-example": (False, True)}


def _stats(a: AttackInput, mask: np.ndarray, per_example: bool):
    mean, std, _ = masked_mean_std(a.ref_phi, mask)
    if not per_example:
        resid = np.where(mask, a.ref_phi - mean, np.nan)
        std = np.full_like(mean, np.nanstd(resid))
    return mean, np.maximum(std, 1e-3)


def score(a: AttackInput, online: bool = True, per_example: bool = False) -> np.ndarray:
    mu_out, s_out = _stats(a, a.use_out, per_example)
    if not online:
        return norm.logcdf(a.phi, mu_out, s_out)
    mu_in, s_in = _stats(a, a.use_in, per_example)
    return norm.logpdf(a.phi, mu_in, s_in) - norm.logpdf(a.phi, mu_out, s_out)
