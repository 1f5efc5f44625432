"""Neural Cleanse unlearning (Wang et al. 2019, "Neural Cleanse: identifying and mitigating backdoor attacks
in neural networks", IEEE S&P, section VI-C): scan the model for each class's smallest trigger (the
neural-cleanse threat's scan, scans/cleanse.py), and for every flagged class stamp its reversed trigger on a
share of the defender's clean points, keep their true labels, and fine-tune: the network learns that the
trigger means nothing. When no class is flagged, the model is fine-tuned on the clean points alone and the
facts say so (name the suspected class with `classes` to unlearn it anyway). The paper stamps 20% of a
10% sample of the training data and trains one epoch; the defaults here (30%, two epochs of Adam at 2e-3, on
500 points) were chosen on the BadNets MNIST model of the tests, where 20% at 1e-3 left 16% attack success."""
from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import nn

from ..core.registry import register
from ..scans.cleanse import CleanseParams, scan
from .repair import RepairDefense, RepairHook, RepairParams, fine_tune


class UnlearnParams(RepairParams):
    lr: float = Field(2e-3, gt=0, description="fine-tuning learning rate (Adam)")
    stamped: float = Field(0.3, gt=0, le=1, description="share of the clean points that carry the reversed trigger")
    classes: list[int] | None = Field(None, description="unlearn these classes' triggers (default: the flagged ones)")
    steps: int = Field(150, ge=10, le=10_000, description="trigger-reversal steps per class")
    scan_points: int = Field(300, ge=20, le=100_000, description="clean points the scan reverses triggers on")


def unlearn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, n_classes: int, low: float, high: float,
            p: UnlearnParams, seed: int) -> tuple[nn.Module, dict[str, Any]]:
    """(unlearned copy, facts): scan, then fine-tune on the clean points with the flagged classes' reversed
    triggers stamped on a share `stamped` of them (true labels kept)."""
    cp = CleanseParams(clean=p.scan_points, steps=p.steps, batch=32)
    found = scan(model, x[:p.scan_points], y[:p.scan_points], n_classes, low, high, cp, seed)
    classes = p.classes if p.classes is not None else found.flagged
    classes = [c for c in classes if 0 <= c < n_classes]
    xs = x.clone()
    if classes:
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(x), generator=g)[:max(1, round(p.stamped * len(x)))]
        for j, c in enumerate(classes):          # the stamped points split between the classes' triggers
            part = idx[j::len(classes)]
            xs[part] = found.stamp(c, x[part])
    tuned = fine_tune(model, xs, y, n_classes, p, seed)
    return tuned, {"flagged": found.flagged, "unlearned": classes,
                   "anomaly_index": [round(float(v), 2) for v in found.index],
                   "trigger_l1": [round(float(v), 1) for v in found.norms],
                   "stamped_points": int(round(p.stamped * len(x))) if classes else 0, "clean_points": len(x),
                   "fine_tune_epochs": p.epochs,
                   **({} if classes else {"note": "no class flagged: fine-tuned on the clean points only"})}


@register
class NeuralCleanseUnlearning(RepairDefense):
    """Neural Cleanse unlearning (Wang et al. 2019): fine-tune with the reversed trigger on correctly labelled data."""

    name = "nc-unlearning"
    title = "Neural Cleanse unlearning: fine-tune with the reversed trigger on correctly labelled clean data"
    Params = UnlearnParams
    sweepable = ("stamped", "epochs")

    def repair(self, model: nn.Module, hook: RepairHook) -> tuple[nn.Module, dict[str, Any]]:
        return unlearn(model, hook.x, hook.y, hook.n_classes, hook.low, hook.high, hook.params, hook.seed)
