"""The in-process simulation of a federation: every round the server samples clients, each trains the
global model on its own data through the recipe's one training loop (through the backend: in order by
default, side by side with processes or Ray), and the server aggregates their updates.

A malicious client is described by an Adversary: `poison` changes what a malicious client trains on (label
flipping, a backdoor), `craft` rewrites the malicious rows of the round's updates after seeing what it is
allowed to see (A Little Is Enough, inner-product manipulation, the Krum/median attacks, boosting). The
same seed gives the same federation, partition, sampling and updates on every backend."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from ..core.backend import LocalBackend, map_checked
from .aggregate import RoundInfo, as_vector, load_vector, rule_for
from .partition import partition
from .recipe import FederatedRecipe, transform_update


class Adversary:
    """Malicious clients. Subclasses (dataclasses) declare `malicious` (their ids) and may declare `active` (the
    rounds they attack in; every round when absent), and `trigger` and `target_label` (a backdoor: its
    accuracy is then measured every round). No defaults here: a dataclass would inherit them as defaults."""

    def attacks_in(self, rnd: int) -> bool:
        active = getattr(self, "active", None)
        return active is None or rnd in active

    def poison(self, cid: int, x: torch.Tensor, y: torch.Tensor, recipe, seed: int):
        """What a malicious client trains on, and how: (x, y, recipe)."""
        return x, y, recipe

    def craft(self, updates: torch.Tensor, weights: torch.Tensor, bad: torch.Tensor, info: RoundInfo,
              aggregator: tuple[str, dict]) -> torch.Tensor:
        """The round's updates with the malicious rows (`bad`) rewritten; `aggregator` is the server's rule and
        its parameters (a full-knowledge attacker shapes its updates to them)."""
        return updates


@dataclass
class History:
    accuracy: list[float]                 # test accuracy of the global model after each round
    correct: torch.Tensor | None          # the final model's per-point correctness on the test set
    backdoor: list[float] | None          # backdoor accuracy after each round (an adversary with a trigger)
    model: nn.Module
    seconds: float
    norms: list[dict[str, float]] = field(default_factory=list)   # median update norm per round, honest/malicious
    backdoor_n: int = 0
    sampled: list[list[int]] = field(default_factory=list)        # the clients of each round


def client_seed(seed: int, rnd: int, cid: int) -> int:
    return (seed * 1_000_003 + rnd * 10_007 + cid) % (2 ** 31)


def client_update(item, shared) -> tuple[torch.Tensor, int]:
    """One client's round: train the global model on its data; its delta and example count. Pure (a backend
    may run it anywhere)."""
    cid, rnd, seed, poisoned = item
    recipe, state, parts, adversary, shape, n_classes, transforms = shared
    x, y = parts[cid]
    if poisoned:
        x, y, recipe = adversary.poison(cid, x, y, recipe, client_seed(seed, rnd, cid))
    start = recipe.make_model(shape, n_classes)
    start.load_state_dict(state)
    trained = recipe.fit(x, y, n_classes, seed=client_seed(seed, rnd, cid), init=start)
    delta = as_vector(trained) - as_vector(start)
    return transform_update(delta, transforms, client_seed(seed, rnd, cid) + 1), len(x)


def simulate(fed: FederatedRecipe, x: torch.Tensor, y: torch.Tensor, n_classes: int, *, seed: int = 0,
             test: tuple[torch.Tensor, torch.Tensor] | None = None, adversary: Adversary | None = None,
             backend=None, check: Callable[[], None] | None = None, init: nn.Module | None = None,
             on_round: Callable[[int, nn.Module], None] | None = None) -> History:
    """Run the federation; `test` (x, y) is evaluated after every round."""
    t0 = time.monotonic()
    backend = backend or LocalBackend()
    fed.validate()
    rule = rule_for(fed.aggregator, fed.aggregator_params)
    idx = partition(y, fed.clients, fed.partition, alpha=fed.alpha, shards=fed.shards, seed=seed)
    parts = [(x[i], y[i]) for i in idx]
    shape = tuple(x.shape[1:])
    local = fed.local()
    torch.manual_seed(seed)
    model = local.make_model(shape, n_classes) if init is None else _copy(init)
    g = torch.Generator().manual_seed(seed + 7919)
    root = _root_set(rule, x, y, seed)
    bad_ids = adversary.malicious if adversary is not None else frozenset()
    trigger = getattr(adversary, "trigger", None)
    acc, bd, norms, rounds = [], [] if trigger is not None else None, [], []
    k = max(1, round(fed.sample * fed.clients))
    for rnd in range(fed.rounds):
        if check is not None:
            check()
        sampled = sorted(torch.randperm(fed.clients, generator=g)[:k].tolist()) if k < fed.clients \
            else list(range(fed.clients))
        rounds.append(sampled)
        attacking = adversary is not None and adversary.attacks_in(rnd)
        items = [(c, rnd, seed, attacking and c in bad_ids) for c in sampled]
        state = {n: t.detach().clone() for n, t in model.state_dict().items()}
        results = map_checked(backend, client_update, items,
                              (local, state, parts, adversary, shape, n_classes, fed.update_transforms), check)
        updates = torch.stack([u for u, _ in results])
        weights = torch.tensor([n for _, n in results], dtype=updates.dtype)
        bad = torch.tensor([attacking and c in bad_ids for c in sampled])
        info = RoundInfo(rnd, fed.clients, fed.sample * fed.clients, g)
        if root is not None:
            info.root_update = client_update((0, rnd, seed + 1, False), (local, state, [root], None, shape,
                                                                            n_classes, ()))[0]
        if attacking and bool(bad.any()):
            updates = adversary.craft(updates, weights, bad, info, (fed.aggregator, dict(fed.aggregator_params)))
        n = updates.norm(dim=1)
        norms.append({"honest": float(n[~bad].median()) if bool((~bad).any()) else float("nan"),
                      "malicious": float(n[bad].median()) if bool(bad.any()) else float("nan")})
        load_vector(model, as_vector(model) + rule(updates, weights, info))
        model.eval()
        if test is not None:
            acc.append(_accuracy(model, *test))
            if bd is not None:
                bd.append(backdoor_accuracy(model, test[0], test[1], trigger, adversary.target_label)[0])
        if on_round is not None:
            on_round(rnd, model)
    correct = _correct(model, *test) if test is not None else None
    n_bd = int((test[1] != adversary.target_label).sum()) if bd is not None else 0
    return History(acc, correct, bd, model.eval(), time.monotonic() - t0, norms, n_bd, rounds)


def _copy(model: nn.Module) -> nn.Module:
    import copy
    return copy.deepcopy(model)


def _root_set(rule, x, y, seed):
    size = getattr(rule, "root_size", 0)
    if not size:
        return None
    pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed + 104_729))[:size]
    return x[pick], y[pick]


@torch.no_grad()
def _correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.cat([model(xb).argmax(1) for xb in x.split(1024)]) == y


def _accuracy(model, x, y) -> float:
    return float(_correct(model, x, y).float().mean())


@torch.no_grad()
def backdoor_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, trigger, target: int) -> tuple[float, int]:
    """The share of triggered test inputs of other classes that the model sends to the target class, and n."""
    keep = y != target
    pred = torch.cat([model(xb).argmax(1) for xb in trigger(x[keep]).split(1024)])
    return float((pred == target).float().mean()), int(keep.sum())


def describe_rounds(history: History) -> dict[str, Any]:
    return {"accuracy": [round(a, 4) for a in history.accuracy],
            **({"backdoor": [round(b, 4) for b in history.backdoor]} if history.backdoor is not None else {}),
            "seconds": round(history.seconds, 2)}
