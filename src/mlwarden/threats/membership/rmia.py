"""Robust membership inference, RMIA (Zarifzadeh et al. 2024, "Low-Cost High-Power Membership Inference
Attacks"). The likelihood ratio of x against population examples z:
    LR(x, z) = [p(x|target) / p(x)] / [p(z|target) / p(z)],  score(x) = fraction of z with LR(x, z) >= gamma,
where p(.) averages the reference models. Online uses all references; offline uses OUT models only and
the paper's linear correction p(x) = ((1 + a) p_out(x) + (1 - a)) / 2."""
from __future__ import annotations

import numpy as np

from .common import AttackInput

NEEDS_REFERENCES = True
VARIANTS = {"rmia-online": True, "rmia-offline": False}


def score(a: AttackInput, online: bool = True, gamma: float = 1.0, offline_a: float = 0.3,
          population: np.ndarray | None = None) -> np.ndarray:
    p_x = np.exp(a.logp_y)
    ref_p = np.exp(a.ref_logp_y)
    if online:
        prior = np.where(a.ref_valid, ref_p, 0).sum(axis=0) / np.maximum(a.ref_valid.sum(axis=0), 1)
    else:
        out = a.use_out
        p_out = np.where(out, ref_p, 0).sum(axis=0) / np.maximum(out.sum(axis=0), 1)
        prior = 0.5 * ((1 + offline_a) * p_out + (1 - offline_a))
    ratio = p_x / np.maximum(prior, 1e-300)
    z = ratio if population is None else ratio[population]
    z_sorted = np.sort(z)
    # fraction of z with ratio_x / ratio_z >= gamma, i.e. ratio_z <= ratio_x / gamma
    return np.searchsorted(z_sorted, ratio / gamma, side="right") / len(z_sorted) + 1e-9 * np.arctan(np.log(np.maximum(ratio, 1e-300)))
