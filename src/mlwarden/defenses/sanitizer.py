"""What the training-data sanitizers share: each is a training defence that sets the recipe's data filter
to an object with `sanitize(x, y) -> (kept mask, labels)`, so the model trains on the sanitized data and a
poisoning threat can count what the filter did to its planted points and to the clean ones."""
from __future__ import annotations

from typing import ClassVar

import torch

from ..core.defense import Defense
from ..core.errors import UserError


class Sanitizer:
    """A data filter: `sanitize` decides; calling it applies the decision (Recipe.data_filter's contract)."""

    def sanitize(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, y: torch.Tensor):
        keep, y_new = self.sanitize(x, y)
        return x[keep], y_new[keep]


class SanitizerDefense(Defense):
    """A training defence whose whole effect is a Sanitizer in the recipe's data filter."""

    kind = "training"
    network_only: ClassVar[str | None] = ""   # filters the data; any model retrains on it
    mitigates = ("label-flipping",)
    modalities: ClassVar[tuple[str, ...]] = ("image", "tabular")

    def make(self, params, data, recipe) -> Sanitizer:
        """The filter; `recipe` is the one it joins (a detector trains a model through it to look at)."""
        raise NotImplementedError

    def defend_recipe(self, recipe, params, data):
        if recipe.data_filter is not None:
            raise UserError(f"{self.name}: the recipe already filters its training data ({recipe.data_filter!r}); "
                            "apply one sanitizer at a time")
        flt = self.make(params, data, recipe)
        return recipe.with_(data_filter=flt), {"filter": repr(flt)}

    def evaluate(self, subject, hardened, params, ctx) -> dict:
        """What the sanitizer does to the clean training data (no attack): its cost."""
        keep, y_new = hardened.recipe.data_filter.sanitize(ctx.data.x_train, ctx.data.y_train)
        removed, relabelled = int((~keep).sum()), int(((y_new != ctx.data.y_train) & keep).sum())
        n = len(keep)
        return {"removed": removed, "relabelled": relabelled, "of": n,
                "summary": f"with no attack it removes {removed} and relabels {relabelled} of the {n} clean "
                           "training points"}


def flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(len(x), -1).float()
