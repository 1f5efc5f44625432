"""Measurement helpers every family uses: accuracy, agreement and attack success, each a Metric with its
sample size and a 95% Clopper-Pearson interval, and the paired difference of two accuracies on the same
points. Written once here; threats, defences and harden call these."""
from __future__ import annotations

import math

import torch

from .finding import Metric


@torch.no_grad()
def correct(predict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Boolean vector: which points `predict` (a Target, a module returning logits, or a function
    returning labels) labels correctly. A Target's queries here are not an attack's cost."""
    if hasattr(predict, "uncounted"):
        with predict.uncounted():
            labels = predict.labels(x)
    else:
        out = predict(x)
        labels = out.argmax(1) if out.ndim == 2 else out
    return labels.cpu() == y.cpu()


def accuracy(predict, x: torch.Tensor, y: torch.Tensor, name: str = "accuracy") -> Metric:
    ok = correct(predict, x, y)
    return Metric.rate(name, int(ok.sum()), len(ok))


def agreement(labels_a: torch.Tensor, labels_b: torch.Tensor, name: str = "agreement") -> Metric:
    same = labels_a.cpu() == labels_b.cpu()
    return Metric.rate(name, int(same.sum()), len(same))


def success_rate(succeeded: torch.Tensor, name: str = "attack success rate") -> Metric:
    return Metric.rate(name, int(succeeded.sum()), len(succeeded))


def paired_difference(before: torch.Tensor, after: torch.Tensor, z: float = 1.96) -> tuple[float, float, float]:
    """after - before for two boolean outcome vectors on the same points, with a Wald interval for paired
    proportions (its variance uses only the points on which the two disagree)."""
    n = len(before)
    b = int((before & ~after).sum())   # lost
    c = int((~before & after).sum())   # gained
    d = (c - b) / n
    var = max((b + c) - (c - b) ** 2 / n, 0.0) / n ** 2
    half = z * math.sqrt(var)
    return d, d - half, d + half
