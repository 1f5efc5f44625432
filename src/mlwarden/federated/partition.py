"""How a federation's training data is split across its clients.

- iid: a seeded random permutation cut into equal parts.
- dirichlet: for every class, client shares drawn from Dirichlet(alpha) (Hsu, Qi & Brown 2019, "Measuring
  the effects of non-identical data distribution for federated visual classification"); small alpha gives
  each client few classes. Redrawn until every client holds at least `min_size` points.
- shards: the data sorted by label and cut into `shards * clients` shards, `shards` per client (McMahan et
  al. 2017, "Communication-efficient learning of deep networks from decentralized data", pathological non-IID).
"""
from __future__ import annotations

import numpy as np
import torch

from ..core.errors import UserError

KINDS = ("iid", "dirichlet", "shards")


def partition(y: torch.Tensor, clients: int, kind: str = "iid", *, alpha: float = 0.5, shards: int = 2,
              seed: int = 0, min_size: int = 2) -> list[torch.Tensor]:
    """Indices of each client's points (each list sorted)."""
    n = len(y)
    if clients < 1 or clients * min_size > n:
        raise UserError(f"cannot split {n} training points across {clients} clients (at least {min_size} each)")
    g = torch.Generator().manual_seed(seed)
    if kind == "iid":
        parts = torch.randperm(n, generator=g).tensor_split(clients)
    elif kind == "dirichlet":
        parts = _dirichlet(y, clients, alpha, seed, min_size)
    elif kind == "shards":
        if shards * clients > n:
            raise UserError(f"{shards} shards for each of {clients} clients need {shards * clients} points; "
                            f"there are {n}")
        order = torch.argsort(y * n + torch.randperm(n, generator=g), stable=True)   # by label, random within
        pieces = order.tensor_split(shards * clients)
        pick = torch.randperm(shards * clients, generator=g).view(clients, shards)
        parts = [torch.cat([pieces[int(j)] for j in row]) for row in pick]
    else:
        raise UserError(f"unknown partition '{kind}'; known: {', '.join(KINDS)}")
    return [p.sort().values for p in parts]


def _dirichlet(y, clients, alpha, seed, min_size, tries: int = 100):
    if alpha <= 0:
        raise UserError(f"dirichlet alpha must be positive, got {alpha:g}")
    rng = np.random.default_rng(seed)
    labels = y.numpy()
    for _ in range(tries):
        buckets: list[list[np.ndarray]] = [[] for _ in range(clients)]
        for c in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == c))
            cuts = (np.cumsum(rng.dirichlet(np.full(clients, alpha)))[:-1] * len(idx)).round().astype(int)
            for k, piece in enumerate(np.split(idx, cuts)):
                buckets[k].append(piece)
        parts = [np.concatenate(b) for b in buckets]
        if min(len(p) for p in parts) >= min_size:
            return [torch.from_numpy(p) for p in parts]
    raise UserError(f"dirichlet alpha {alpha:g} leaves a client with fewer than {min_size} points in {tries} draws; "
                    "use a larger alpha or fewer clients")
