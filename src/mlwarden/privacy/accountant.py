"""Privacy accounting for DP-SGD through Opacus: the PRV accountant (Gopi et al. 2021, "Numerical
Composition of Differential Privacy") by default, falling back to RDP (Mironov 2017) when PRV fails
(it can, for very many steps or extreme parameters). RDP is looser: for the same noise it certifies a
larger epsilon, so it needs more noise for the same target."""
from __future__ import annotations

import warnings
from functools import lru_cache

from ..core.extras import require


@lru_cache(maxsize=256)  # calibration is a binary search over accountants: seconds; reference models repeat it
def noise_for(epsilon: float, delta: float, sample_rate: float, steps: int,
              accountant: str = "prv") -> tuple[float, str]:
    """(noise multiplier, accountant actually used) reaching `epsilon` after `steps` steps."""
    get_noise_multiplier = require("opacus.accountants.utils", "dp", "DP-SGD").get_noise_multiplier
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if accountant == "prv":
            try:
                return float(get_noise_multiplier(target_epsilon=epsilon, target_delta=delta,
                                                  sample_rate=sample_rate, steps=steps, accountant="prv")), "prv"
            except Exception:  # noqa: BLE001 - PRV's numerical domain errors; RDP always works
                pass
        return float(get_noise_multiplier(target_epsilon=epsilon, target_delta=delta, sample_rate=sample_rate,
                                          steps=steps, accountant="rdp")), "rdp"


def epsilon_for(noise: float, delta: float, sample_rate: float, steps: int, accountant: str = "prv") -> float:
    from opacus.accountants import create_accountant
    acc = create_accountant(accountant)
    acc.history = [(noise, sample_rate, steps)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(acc.get_epsilon(delta=delta))
