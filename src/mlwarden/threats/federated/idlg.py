"""iDLG label recovery (Zhao, Mopuri & Bilen 2020, "iDLG: improved deep leakage from gradients"): with a
cross-entropy loss, the gradient of the last layer's bias is softmax(z) - onehot(y) averaged over the batch;
for one example its only negative entry is the label. For a batch, the label counts are estimated from how far
each entry falls below the batch's mean softmax, taken as uniform (the model of round 1; in the spirit of
Wainakh et al. 2022, "User-level label leakage from gradients"): exact for one example, an estimate beyond."""
from __future__ import annotations

import torch

from ...core.registry import register
from .leakage import LeakageThreat


def last_layer_signal(update: list[torch.Tensor], n_classes: int) -> torch.Tensor:
    """The last layer's bias gradient, or the row sums of its weight gradient when it has no bias (same sign
    for non-negative activations)."""
    for g in reversed(update):
        if g.ndim == 1 and len(g) == n_classes:
            return g
        if g.ndim == 2 and g.shape[0] == n_classes:
            return g.sum(1)
    raise ValueError("the model's last layer does not have one output per class")


def idlg_labels(update: list[torch.Tensor], batch: int, n_classes: int) -> torch.Tensor:
    g = last_layer_signal(update, n_classes)
    if not bool(torch.isfinite(g).all()) or float(g.abs().sum()) == 0.0:   # nothing to read (a pruned update)
        return torch.arange(batch) % n_classes
    if batch == 1:
        return torch.argmin(g).view(1)
    share = (1.0 / n_classes - g / g.abs().sum() * 2) * batch   # below the mean softmax: that class's count
    counts = share.clamp_min(0).floor()
    rest = (share.clamp_min(0) - counts)
    while counts.sum() < batch:
        i = int(torch.argmax(rest))
        counts[i] += 1
        rest[i] = -1
    while counts.sum() > batch:
        counts[int(torch.argmax(counts))] -= 1
    return torch.repeat_interleave(torch.arange(n_classes), counts.long())


@register
class IDLG(LeakageThreat):
    """iDLG: the labels of a client's batch from the last layer's gradient (Zhao et al. 2020)."""
    name = "idlg"
    title = "Label recovery from a client's update (iDLG)"
    what = "iDLG recovers its labels"
    recovers_images = False

    def reconstruct(self, model, update, batch, shape, n_classes, seed, p, ctx):
        return None, idlg_labels(update, batch, n_classes)
