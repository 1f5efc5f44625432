"""Exposure of a canary (Carlini et al. 2019, "The Secret Sharer"): with secret space R and the rank of
the canary's secret among all candidates ordered by the model's log-perplexity,
    exposure = log2 |R| - log2 rank.
Exact by walking the model's autoregressive tree over R (one batched forward pass per internal node), or
estimated from sampled candidates by fitting a skew-normal to their log-perplexities (the paper's
approximation, which under-estimates the extreme tail by a few bits)."""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import skewnorm

DIGITS = "0123456789"


@torch.no_grad()
def next_digit_logp(model, corpus, contexts: list[str] | torch.Tensor, batch: int = 8192) -> torch.Tensor:
    """(n, 10) log-probabilities of each digit after each context (last `corpus.context` characters)."""
    if not torch.is_tensor(contexts):
        contexts = torch.stack([corpus.context_ids(c) for c in contexts])
    digit_ids = corpus.encode(DIGITS)
    out = []
    for i in range(0, len(contexts), batch):
        out.append(torch.log_softmax(model(contexts[i:i + batch].float()), 1)[:, digit_ids])
    return torch.cat(out)


@torch.no_grad()
def all_log_probs(model, corpus, prefix: str, digits: int) -> np.ndarray:
    """log P(secret | prefix) for all 10**digits secrets, in numeric order, by walking the tree level by level."""
    ctx = corpus.context_ids(prefix).unsqueeze(0)  # (1, c) contexts of the current level
    digit_ids = corpus.encode(DIGITS)
    total = torch.zeros(1, dtype=torch.float64)
    for level in range(digits):
        lp = next_digit_logp(model, corpus, ctx).double()                  # (n, 10)
        total = (total[:, None] + lp).reshape(-1)                           # children in numeric order
        if level < digits - 1:
            ctx = torch.cat([ctx.repeat_interleave(10, 0)[:, 1:], digit_ids.repeat(len(ctx))[:, None]], 1)
    return total.numpy()


def exact_exposure(model, corpus, prefix: str, secret: str) -> tuple[float, int]:
    """(exposure in bits, rank) by enumerating R = all digit strings of the secret's length."""
    lp = all_log_probs(model, corpus, prefix, len(secret))
    mine = lp[int(secret)]
    rank = 1 + int((lp > mine).sum())
    return math.log2(len(lp)) - math.log2(rank), rank


@torch.no_grad()
def sequence_log_prob(model, corpus, prefix: str, secrets: list[str]) -> np.ndarray:
    total = np.zeros(len(secrets))
    for j in range(len(secrets[0])):
        ctxs = [prefix + s[:j] for s in secrets]
        lp = next_digit_logp(model, corpus, ctxs).numpy()
        total += lp[np.arange(len(secrets)), [int(s[j]) for s in secrets]]
    return total


def estimated_exposure(model, corpus, prefix: str, secret: str, samples: int = 5000, seed: int = 0) -> float:
    """Exposure from a skew-normal fit to the log-perplexity of `samples` random candidates."""
    rng = np.random.default_rng(seed)
    cands = ["".join(rng.choice(list(DIGITS), len(secret))) for _ in range(samples)]
    ppl = -sequence_log_prob(model, corpus, prefix, cands)
    mine = -sequence_log_prob(model, corpus, prefix, [secret])[0]
    a, loc, scale = skewnorm.fit(ppl)
    tail = max(skewnorm.cdf(mine, a, loc, scale), 1e-300)  # P[random candidate has lower perplexity]
    return float(min(-math.log2(tail), len(secret) * math.log2(10)))
