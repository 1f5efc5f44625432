"""What every poisoning threat shares: training the victim through its recipe on poisoned data and, when
the recipe has a sanitizer (a data_filter with `keep_mask` or `sanitize`), counting what it did to the
planted points and to the clean ones, so a finding can say what a filter stops and what it costs. A
sanitizer says what it does with `removes` (default true) and `relabels` (default false)."""
from __future__ import annotations

import torch

from ...core.finding import Metric


def sanitize(sanitizer, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(kept mask, labels after relabelling) from a sanitizer that removes points (keep_mask) or relabels
    them (sanitize); None when the data filter is not a sanitizer."""
    if hasattr(sanitizer, "sanitize"):
        keep, y_new = sanitizer.sanitize(x, y)
        return torch.as_tensor(keep, dtype=torch.bool), torch.as_tensor(y_new)
    if hasattr(sanitizer, "keep_mask"):
        return torch.as_tensor(sanitizer.keep_mask(x, y), dtype=torch.bool), y
    return None


def sanitized_fit(recipe, x: torch.Tensor, y: torch.Tensor, planted: torch.Tensor, n_classes: int, seed: int,
                  y_true: torch.Tensor | None = None, groups: dict[str, torch.Tensor] | None = None):
    """The victim trained through `recipe` on (x, y), of which `planted` marks the attacker's points (y_true:
    their labels before poisoning, for relabelling sanitizers). Returns (model, metrics): through a
    sanitizer, the planted and clean points it removed (and, for each named mask in `groups`, the share of
    those points it removed), and the planted labels it restored and clean ones it changed."""
    planted = torch.as_tensor(planted, dtype=torch.bool)
    done = sanitize(recipe.data_filter, x, y) if recipe.data_filter is not None else None
    if done is None:
        return recipe.fit(x, y, n_classes, seed=seed), []
    keep, y_new = done
    changed = (y_new != y) & keep
    metrics = []
    if getattr(recipe.data_filter, "removes", True):
        metrics += [Metric.rate("planted points removed by the sanitizer", int((~keep & planted).sum()),
                                int(planted.sum())),
                    Metric.rate("clean points removed by the sanitizer", int((~keep & ~planted).sum()),
                                int((~planted).sum()))]
        metrics += [Metric.rate(f"{name} removed by the sanitizer", int((~keep & m).sum()), int(m.sum()))
                    for name, m in (groups or {}).items()]
    if getattr(recipe.data_filter, "relabels", False):
        truth = y if y_true is None else y_true
        metrics += [Metric.rate("planted labels restored by the sanitizer",
                                int((changed & planted & (y_new == truth)).sum()), int(planted.sum())),
                    Metric.rate("clean labels changed by the sanitizer", int((changed & ~planted).sum()),
                                int((~planted).sum()))]
    model = recipe.with_(data_filter=None).fit(x[keep], y_new[keep], n_classes, seed=seed)
    return model, metrics
