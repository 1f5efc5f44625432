"""A federation described as a recipe: its clients train with the recipe's own loop, fields and hooks
(`epochs` are the local epochs of one round), and the server combines their updates with an aggregation
rule. `fit` runs the federation in process (federated/simulation.py) and returns the global model, so
everything that retrains through a recipe (reference models, harden's re-audit) works on a federation."""
from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch

from ..core.errors import UserError
from ..core.recipe import Recipe
from .partition import KINDS

MODES = ("fedavg", "fedsgd")


@dataclass
class FederatedRecipe(Recipe):
    federated = True
    clients: int = 10
    rounds: int = 5
    mode: str = "fedavg"          # fedavg: `epochs` local epochs per round; fedsgd: one full-batch SGD step
    sample: float = 1.0           # fraction of clients sampled each round
    partition: str = "iid"
    alpha: float = 0.5            # dirichlet concentration (partition "dirichlet")
    shards: int = 2               # shards per client (partition "shards")
    aggregator: str = "fedavg"    # a registered aggregation defence, or fedavg
    aggregator_params: dict = field(default_factory=dict)
    update_transforms: tuple = ()  # what each client does to its update before sending it (pruning, noise)

    @classmethod
    def of(cls, recipe: Recipe, **federation) -> "FederatedRecipe":
        """The federation whose clients train as `recipe` does."""
        base = {f.name: getattr(recipe, f.name) for f in fields(Recipe)}
        fed = cls(**{**base, "name": f"federated-{recipe.name}"}, **federation)
        fed.validate()
        return fed

    def validate(self) -> None:
        if self.clients < 2:
            raise UserError(f"a federation needs at least 2 clients, got {self.clients}")
        if self.rounds < 1:
            raise UserError(f"a federation needs at least 1 round, got {self.rounds}")
        if self.mode not in MODES:
            raise UserError(f"federated mode '{self.mode}' is unknown; known: {', '.join(MODES)}")
        if not 0 < self.sample <= 1:
            raise UserError(f"client sampling fraction must be in (0, 1], got {self.sample:g}")
        if self.partition not in KINDS:
            raise UserError(f"unknown partition '{self.partition}'; known: {', '.join(KINDS)}")

    def local(self) -> Recipe:
        """The recipe one client trains with in one round (the global model's repair and inference
        defences apply to the global model, not to each local one)."""
        base = {f.name: getattr(self, f.name) for f in fields(Recipe)}
        base.update(name=self.name.removeprefix("federated-"), repair=None, inference=None)
        if self.mode == "fedsgd":
            base.update(epochs=1, batch_size=1 << 30, optimizer="sgd")
        return Recipe(**base)

    def describe(self) -> dict:
        return {**super().describe(), "federation": {
            "clients": self.clients, "rounds": self.rounds, "mode": self.mode, "sample": self.sample,
            "partition": self.partition, **({"alpha": self.alpha} if self.partition == "dirichlet" else {}),
            **({"shards": self.shards} if self.partition == "shards" else {}),
            "aggregator": self.aggregator, "aggregator_params": self.aggregator_params,
            **({"update_transforms": [repr(t) for t in self.update_transforms]} if self.update_transforms else {})}}

    def summary(self) -> str:
        part = {"iid": "IID", "dirichlet": f"non-IID (Dirichlet alpha {self.alpha:g})",
                "shards": f"non-IID ({self.shards} label shards each)"}[self.partition]
        local = f"{self.epochs} local epoch{'s' * (self.epochs != 1)}" if self.mode == "fedavg" else "one SGD step"
        sampled = "" if self.sample == 1 else f", {self.sample:.0%} of clients per round"
        return (f"{self.clients} clients ({part}), {self.rounds} rounds of {self.mode.upper()} with {local}"
                f"{sampled}, aggregated by {self.aggregator}")

    def with_aggregator(self, name: str, params: dict) -> "FederatedRecipe":
        return self.with_(aggregator=name, aggregator_params=dict(params), name=self.name)

    def fit(self, x, y, n_classes, *, seed=0, wrap=None, batch_transform=None, on_epoch=None, init=None):
        from .simulation import simulate
        if wrap is not None or batch_transform is not None or on_epoch is not None:
            raise UserError("a federation trains its clients with its recipe's own hooks; per-call hooks are not "
                            "supported")
        model = simulate(self, x, y, n_classes, seed=seed, init=init).model
        if self.repair is not None:
            model = self.repair(model.eval())
        return model.eval()


def transform_update(vec: torch.Tensor, transforms: tuple, seed: int) -> torch.Tensor:
    """A client's flat update after its own defences (each `t(vec, generator) -> vec`), seeded per client."""
    if not transforms:
        return vec
    g = torch.Generator().manual_seed(seed)
    for t in transforms:
        vec = t(vec, g)
    return vec
