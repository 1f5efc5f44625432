"""Secret extraction by shortest-path search (Carlini et al. 2019, section 8): Dijkstra over the tree of
digit strings with edge cost -log p(digit | prefix so far), so the first complete string popped is the
model's most likely secret. Each node expansion is one model query. The secret is extracted when the
most likely string is the canary's."""
from __future__ import annotations

import heapq
from dataclasses import dataclass

from .exposure import DIGITS, next_digit_logp


@dataclass
class Extraction:
    extracted: bool
    best_guess: str
    queries: int
    exhausted_budget: bool


def extract(model, corpus, prefix: str, secret: str, max_queries: int = 20_000) -> Extraction:
    heap: list[tuple[float, str]] = [(0.0, "")]
    queries = 0
    while heap:
        cost, partial = heapq.heappop(heap)
        if len(partial) == len(secret):
            return Extraction(partial == secret, partial, queries, False)
        if queries >= max_queries:
            return Extraction(False, "", queries, True)
        lp = next_digit_logp(model, corpus, [prefix + partial])[0].tolist()
        queries += 1
        for d, l in zip(DIGITS, lp):
            heapq.heappush(heap, (cost - l, partial + d))
    return Extraction(False, "", queries, True)
