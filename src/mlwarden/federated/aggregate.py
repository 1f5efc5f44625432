"""The server's side of a round: model parameters as one flat vector, FedAvg (McMahan et al. 2017), and
the base of the aggregation defences, which replace FedAvg with a robust rule.

An aggregation rule is a callable `(updates, weights, info) -> update`: `updates` is a (K, P) tensor of the
K sampled clients' deltas (local model minus global model), `weights` their example counts, `info` the
round (RoundInfo). Only parameters are aggregated (the built-in networks have no buffers)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from ..core.defense import Defense
from ..core.errors import UserError
from ..core.recipe import Recipe


@dataclass
class RoundInfo:
    round: int
    clients: int                          # the federation's size (N), of which `updates` are the sampled K
    expected: float                       # clients expected per round (sample * N)
    generator: torch.Generator            # the server's seeded randomness (DP noise)
    root_update: torch.Tensor | None = None   # the server's own update on its root set (FLTrust)


Rule = Callable[[torch.Tensor, torch.Tensor, RoundInfo], torch.Tensor]


def as_vector(model: nn.Module) -> torch.Tensor:
    return torch.nn.utils.parameters_to_vector([p.detach() for p in model.parameters()]).clone()


def load_vector(model: nn.Module, vec: torch.Tensor) -> nn.Module:
    torch.nn.utils.vector_to_parameters(vec.to(next(model.parameters()).dtype), model.parameters())
    return model


def fedavg(updates: torch.Tensor, weights: torch.Tensor, info: RoundInfo | None = None) -> torch.Tensor:
    """The mean of the updates weighted by the clients' example counts."""
    w = weights.to(updates.dtype)
    return (w @ updates) / w.sum()


def median_of(values: torch.Tensor) -> torch.Tensor:
    """Coordinate-wise median along dim 0, the mean of the two middle values for an even count. On the CPU,
    numpy's partition-based median (1.4x faster than torch's kthvalue at 1M parameters); the same numbers."""
    if values.device.type == "cpu" and not values.requires_grad:
        import numpy as np
        return torch.from_numpy(np.median(values.numpy(), axis=0)).to(values.dtype)
    k = len(values)
    upper = values.kthvalue(k // 2 + 1, 0).values
    return upper if k % 2 else (values.kthvalue(k // 2, 0).values + upper) / 2


PAIRWISE_MOST = 25   # torch.cdist computes each pair on its own up to 25 rows; above, through a matrix product


def sq_distances(updates: torch.Tensor) -> torch.Tensor:
    """(K, K) squared Euclidean distances between the updates, in float64. Up to PAIRWISE_MOST updates each
    pair is computed once (the matrix is symmetric): the same numbers as torch.cdist over all K x K pairs, in
    half the time (85 ms against 160 ms for 11 updates of 1M parameters). Above, cdist over all pairs."""
    x = updates.double()
    k = len(x)
    if k > PAIRWISE_MOST:
        return torch.cdist(x, x).pow(2)
    d = torch.zeros(k, k, dtype=torch.float64, device=x.device)
    for i in range(k - 1):
        row = torch.cdist(x[i:i + 1], x[i + 1:])[0].pow(2)
        d[i, i + 1:] = row
        d[i + 1:, i] = row
    return d


def scores_from(distances: torch.Tensor, f: int) -> torch.Tensor:
    """Krum's scores from a (K, K) matrix of squared distances."""
    k = len(distances)
    d = distances.clone()
    d.fill_diagonal_(float("inf"))
    return d.sort(1).values[:, :max(k - f - 2, 1)].sum(1)


def krum_scores(updates: torch.Tensor, f: int) -> torch.Tensor:
    """Krum's score (Blanchard et al. 2017): the sum of squared distances to the K - f - 2 nearest others."""
    return scores_from(sq_distances(updates), f)


def rule_for(name: str, params: dict[str, Any]) -> Rule:
    """FedAvg, or the registered aggregation defence `name` with these parameters."""
    if name == "fedavg":
        return fedavg
    from ..core.registry import get_defense
    d = get_defense(name)
    if d.kind != "aggregation":
        raise UserError(f"'{name}' is a {d.kind} defence, not an aggregation rule")
    return d.rule(d.Params(**params))


class AggregationDefense(Defense):
    """An aggregation rule as a defence: it rewrites a federation's recipe to aggregate with `rule`, so harden
    retrains the federation with it (its cost with no attacker) and re-audits the federated threats."""
    kind = "aggregation"
    mitigates = ("federated",)
    modalities = ("image", "tabular")

    def rule(self, params) -> Rule:
        raise NotImplementedError

    def check(self, params, data) -> None:
        self.rule(params)   # a rule that cannot be built fails before anything trains

    def evaluate(self, subject, hardened, params, ctx) -> dict[str, Any]:
        """The cost per client with no attacker: each client's accuracy on its own training data under the
        federation's global model before and after (robust rules can leave out clients whose data differs)."""
        return per_client(subject.recipe, ctx.data, subject.target, hardened.target, ctx.seed)

    def defend_recipe(self, recipe: Recipe, params, data) -> tuple[Recipe, dict[str, Any]]:
        if not getattr(recipe, "federated", False):
            raise UserError(f"{self.name} is an aggregation rule: it hardens a federation (mlwarden audit/harden "
                            "--federated)")
        return recipe.with_aggregator(self.name, params.model_dump()), {"aggregator": self.name}


def per_client(fed, data, before, after, seed: int) -> dict[str, Any]:
    """Accuracy of each client's own training points under two global models (targets), and the worst client."""
    from ..core.measure import correct
    from .partition import partition
    if not getattr(fed, "federated", False):
        return {}
    idx = partition(data.y_train, fed.clients, fed.partition, alpha=fed.alpha, shards=fed.shards, seed=seed)
    rows = []
    for c, i in enumerate(idx):
        x, y = data.x_train[i], data.y_train[i]
        rows.append({"client": c, "n": len(i), "before": float(correct(before, x, y).float().mean()),
                     "after": float(correct(after, x, y).float().mean())})
    worst = min(rows, key=lambda r: r["after"] - r["before"])
    return {"per_client": rows, "worst_client": worst, "partition": fed.partition}
