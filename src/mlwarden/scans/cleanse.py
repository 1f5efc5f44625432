"""Neural Cleanse's trigger reversal (Wang et al. 2019, "Neural Cleanse: identifying and mitigating backdoor
attacks in neural networks", IEEE S&P): for every class, the smallest mask-and-pattern trigger that sends
clean inputs of the other classes to it, and the MAD anomaly index over those triggers' sizes. The
neural-cleanse threat reports the scan; the nc-unlearning defence fine-tunes the reversed trigger away."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from pydantic import Field

from ..core.threat import Params

SUCCESS = 0.99   # a reversed trigger counts once it sends this share of clean inputs to its class
FLAG = 2.0       # anomaly index above which a class is flagged (Wang et al. 2019)


class CleanseParams(Params):
    clean: int = Field(500, ge=20, le=100_000, description="clean inputs the scan uses (from the training split)")
    steps: int = Field(300, ge=10, le=10_000, description="optimisation steps per class")
    batch: int = Field(64, ge=8, le=4096)
    lr: float = Field(0.1, gt=0)
    init_cost: float = Field(1e-3, gt=0, description="initial weight lambda of the mask's L1 norm")


def reverse_trigger(model, x: torch.Tensor, label: int, low: float, high: float, p: CleanseParams,
                    seed: int) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """(mask (1, H, W), pattern (C, H, W), the smallest L1 norm of a mask that reached SUCCESS on the
    inputs (inf if none did), the success it had) for one class."""
    g = torch.Generator().manual_seed(seed)
    c, h, w = x.shape[1:]
    mask_p = torch.zeros(1, h, w).requires_grad_(True)              # mask = sigmoid-like via tanh
    pat_p = (torch.rand(c, h, w, generator=g) * 0.2 - 0.1).requires_grad_(True)
    opt = torch.optim.Adam([mask_p, pat_p], lr=p.lr, betas=(0.5, 0.9))
    cost, up, down = p.init_cost, 0, 0
    best = (None, None, float("inf"), 0.0)
    want = torch.full((min(p.batch, len(x)),), label)
    for step in range(p.steps):
        idx = torch.randint(0, len(x), (min(p.batch, len(x)),), generator=g)
        mask = (torch.tanh(mask_p) + 1) / 2
        pattern = low + (high - low) * (torch.tanh(pat_p) + 1) / 2
        xs = (1 - mask) * x[idx] + mask * pattern
        out = model(xs)
        ce = torch.nn.functional.cross_entropy(out, want)
        l1 = mask.sum()
        mask_p.grad, pat_p.grad = torch.autograd.grad(ce + cost * l1, [mask_p, pat_p])  # not the model's
        opt.step()
        success = float((out.argmax(1) == label).float().mean())
        if success >= SUCCESS and float(l1.detach()) < best[2]:
            best = (mask.detach().clone(), pattern.detach().clone(), float(l1.detach()), success)
        # the paper's schedule: raise the cost while the trigger works, lower it while it does not
        if success >= SUCCESS:
            up, down = up + 1, 0
        else:
            up, down = 0, down + 1
        if up >= 5:
            cost, up = cost * 1.5, 0
        elif down >= 5:
            cost, down = cost / 1.5 ** 1.5, 0
    if best[0] is None:
        mask = ((torch.tanh(mask_p) + 1) / 2).detach()
        pattern = (low + (high - low) * (torch.tanh(pat_p) + 1) / 2).detach()
        return mask, pattern, float("inf"), success
    return best


def anomaly_index(norms: torch.Tensor) -> torch.Tensor:
    """(median - norm) / (1.4826 MAD) per class: large for a class whose trigger is unusually small."""
    finite = norms[torch.isfinite(norms)]
    med = torch.quantile(finite, 0.5)                 # the mean of the two middle values (torch.median: the lower)
    mad = 1.4826 * torch.quantile((finite - med).abs(), 0.5)
    return (med - norms) / mad.clamp_min(1e-12)


@dataclass
class Scan:
    masks: list[torch.Tensor]
    patterns: list[torch.Tensor]
    norms: torch.Tensor          # smallest successful mask L1 per class (inf: none reached SUCCESS)
    rates: list[float]           # the success of that trigger on the clean inputs
    index: torch.Tensor          # anomaly index per class
    flagged: list[int]           # classes whose index exceeds FLAG

    def stamp(self, c: int, x: torch.Tensor) -> torch.Tensor:
        """Class c's reversed trigger applied to x."""
        return (1 - self.masks[c]) * x + self.masks[c] * self.patterns[c]


def scan(model, x: torch.Tensor, y: torch.Tensor, n_classes: int, low: float, high: float, p: CleanseParams,
         seed: int, check: Callable[[], None] | None = None) -> Scan:
    """Reverse every class's trigger on the clean inputs of the other classes and flag the outliers."""
    masks, patterns, norms, rates = [], [], [], []
    for c in range(n_classes):
        if check is not None:
            check()
        m, pat, l1, ok = reverse_trigger(model, x[y != c], c, low, high, p, seed + c)
        masks.append(m)
        patterns.append(pat)
        norms.append(l1)
        rates.append(ok)
    norms_t = torch.tensor(norms)
    index = anomaly_index(norms_t)
    return Scan(masks, patterns, norms_t, rates, index, [c for c in range(n_classes) if float(index[c]) > FLAG])
