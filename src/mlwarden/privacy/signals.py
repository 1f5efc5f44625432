"""The membership signal matrix: log-probabilities of every model (target and references) on every
example of the pool. Every membership-inference attack is a function of this one matrix, so adding an
attack costs no training and no queries."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..core.target import Target, outputs_are_probabilities


@torch.no_grad()
def log_probs(model: nn.Module | Target, x: torch.Tensor, batch: int = 2048, temperature: float = 1.0,
              logits: bool = False) -> np.ndarray:
    """(N, C) log-probabilities of the model's softmax at `temperature`, in float64.

    logits=False: what a scores API gives, float32 probabilities (reference models, which give logits, go
    through the same float32 softmax, so the target's and the references' signals have the same
    precision); the temperature then rescales their logarithms, which are the logits up to a constant
    wherever float32 did not round a probability to 1. logits=True: from the logits themselves (a module,
    or a white-box target's network), so confident examples keep their differences: a float32 softmax
    rounds p = 1 - 1e-8 and p = 1 - 1e-12 to the same 1.0."""
    if logits and isinstance(model, Target):
        model = model.module
    out = []
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        s = model.scores(xb) if isinstance(model, Target) else model(xb)
        if logits and not outputs_are_probabilities(s):
            z = s.detach().double()
        else:
            if not outputs_are_probabilities(s):
                s = s.float().softmax(1)
            z = torch.log(s.detach().double().clamp_min(1e-300))
            if temperature == 1.0:
                out.append(z)
                continue
        out.append(torch.log_softmax(z / temperature, dim=1))
    return torch.cat(out).numpy()


def true_label_logp(logp: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(..., N, C) log-probabilities -> (..., N) log-probability of each example's own label."""
    return np.take_along_axis(logp, y.reshape((1,) * (logp.ndim - 2) + (-1, 1)), axis=-1)[..., 0]


def logit_confidence(logp: np.ndarray, y: np.ndarray) -> np.ndarray:
    """phi = log p_y - log(1 - p_y), computed as log p_y - logsumexp(log p_other) so it stays finite
    when p_y rounds to 1 (LiRA's logit scaling, Carlini et al. 2022)."""
    own = true_label_logp(logp, y)
    mask = np.zeros(logp.shape[-2:], dtype=bool)
    mask[np.arange(len(y)), y] = True
    other = np.where(mask, -np.inf, logp)
    m = other.max(axis=-1, keepdims=True)
    rest = (m[..., 0] + np.log(np.exp(other - m).sum(axis=-1)))
    return own - rest
