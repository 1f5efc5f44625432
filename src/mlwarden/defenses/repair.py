"""What the backdoor-removal defences share: the defender's small clean set (drawn once from the training
split: the user of a downloaded model holds a little clean data, not the training set), the fine-tuning
both end with (the recipe's one training loop, on that clean set), and the hook that the hardened recipe
calls on every model it trains, so a re-audit that retrains a backdoored model measures it repaired."""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import nn

from ..core.data import Dataset
from ..core.defense import Defense, DefenseContext, network_of
from ..core.recipe import Recipe
from ..core.threat import Params


class RepairParams(Params):
    clean: int = Field(500, ge=20, le=1_000_000, description="clean training points the defender holds")
    epochs: int = Field(2, ge=0, le=100, description="fine-tuning epochs on the clean points")
    lr: float = Field(1e-3, gt=0, description="fine-tuning learning rate (Adam)")
    batch: int = Field(32, ge=1, le=4096)


def clean_set(data: Dataset, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    idx = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(seed))[:n]
    return data.x_train[idx], data.y_train[idx]


def _no_factory(input_shape, n_classes):
    raise AssertionError("fine-tuning starts from the given model")


def fine_tune(model: nn.Module, x: torch.Tensor, y: torch.Tensor, n_classes: int, p: RepairParams,
              seed: int) -> nn.Module:
    """A trained copy of `model` after p.epochs of Adam on (x, y); every parameter trains (the caller's model,
    whose parameters may be frozen, is left as it was)."""
    frozen = [q for q in model.parameters() if not q.requires_grad]
    for q in frozen:
        q.requires_grad_(True)
    recipe = Recipe("repair fine-tuning", _no_factory, epochs=p.epochs, batch_size=p.batch, lr=p.lr)
    try:
        return recipe.fit(x, y, n_classes, seed=seed, init=model)   # fit trains a deep copy
    finally:
        for q in frozen:
            q.requires_grad_(False)


class RepairHook:
    """model -> repaired model, with the clean set it uses; `facts` describes the last repair."""

    def __init__(self, name: str, repair, params: RepairParams, data: Dataset, seed: int):
        self.name, self._repair, self.params, self.seed = name, repair, params, seed
        self.x, self.y = clean_set(data, params.clean, seed)
        self.n_classes, self.low, self.high = data.n_classes, data.space.low, data.space.high
        self.facts: dict[str, Any] = {}

    def __call__(self, model: nn.Module) -> nn.Module:
        repaired, self.facts = self._repair(model.eval(), self)
        return repaired.eval()

    def __repr__(self) -> str:   # part of the recipe's description (cache keys): stable, no tensors
        return f"{self.name}({self.params.model_dump()}, clean={len(self.x)}, seed={self.seed})"


class RepairDefense(Defense):
    """A defence that rewrites a trained network with a little clean data (`repair(model, hook)`)."""

    kind = "repair"
    network_only: ClassVar[str | None] = "rewrites a network's weights"
    mitigates = ("backdoor", "neural-cleanse")
    modalities: ClassVar[tuple[str, ...]] = ("image",)
    Params = RepairParams

    def repair(self, model: nn.Module, hook: RepairHook) -> tuple[nn.Module, dict[str, Any]]:
        raise NotImplementedError

    def check_target(self, target, params) -> None:
        network_of(target, self.name)

    def repair_hook(self, params, ctx: DefenseContext) -> RepairHook:
        return RepairHook(self.name, self.repair, params, ctx.data, ctx.seed)
