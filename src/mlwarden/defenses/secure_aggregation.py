"""Secure aggregation with CKKS homomorphic encryption (federated/ckks.py, TenSEAL, extra `[he]`): clients
encrypt their weighted updates, the server adds ciphertexts and only the sum is decrypted (FedAvg on the sum;
Phong et al. 2017 for additively homomorphic aggregation). The server never sees one update in the clear, so
the gradient-leakage attacks get the sum of K clients' updates.

What it costs and what it does not do: time and bytes per client against plaintext (measured by harden); the
trust assumption (one shared secret key: a colluding client decrypts everything); a robust rule cannot
inspect encrypted updates, so malicious clients are not filtered (sign flipping still reaches the mean); and a
malicious server that changes the model can make the sum itself leak (Fowl et al. 2022)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from pydantic import Field

from ..core.registry import register
from ..core.threat import Params
from ..federated.aggregate import AggregationDefense, RoundInfo, per_client
from ..federated.ckks import CKKS

TRUST = ("one CKKS key pair shared by the clients: the server can add ciphertexts but not decrypt; any client "
         "holds the secret key and, colluding with the server, decrypts every update; robust aggregation cannot "
         "inspect encrypted updates, so this rule is FedAvg on the sum")


@dataclass
class SecureAggregation:
    ckks: CKKS
    costs: list = field(default_factory=list)

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor, info: RoundInfo | None = None):
        w = weights.to(updates.dtype)
        total, cost = self.ckks.secure_sum(w[:, None] * updates)   # clients scale by their example counts
        self.costs.append(cost)
        return total / w.sum()


class SecureAggregationParams(Params):
    poly_modulus_degree: Literal[8192, 16384] = Field(8192, description="CKKS ring size (slots: half of it)")
    scale_bits: int = Field(40, ge=20, le=49, description="bits of the CKKS scale (precision; 2 levels of it and "
                            "two 60-bit primes must fit a ring of 8192's 218 bits)")


@register
class SecureAggregationDefense(AggregationDefense):
    """Secure aggregation: CKKS-encrypted client updates, only their sum is decrypted (TenSEAL)."""
    name = "secure-aggregation"
    title = "secure aggregation with CKKS homomorphic encryption"
    Params = SecureAggregationParams
    mitigates = ("idlg", "dlg", "analytic-fc", "inverting-gradients")

    def rule(self, params):
        return SecureAggregation(CKKS(params.poly_modulus_degree, params.scale_bits))

    extras = (("tenseal", "he", "CKKS secure aggregation"),)

    def check(self, params, data) -> None:
        self.require_extras()

    def evaluate(self, subject, hardened, params, ctx):
        """The overhead on one round of this federation's updates, and the sum's error against plaintext."""
        import time
        fed, model = subject.recipe, hardened.model
        n = sum(p.numel() for p in model.parameters()) if model is not None else 0
        g = torch.Generator().manual_seed(ctx.seed)
        updates = 0.01 * torch.randn(fed.clients, n, generator=g, dtype=torch.float64)
        t0 = time.perf_counter()
        plain = updates.sum(0)
        plain_s = time.perf_counter() - t0
        total, cost = CKKS(params.poly_modulus_degree, params.scale_bits).secure_sum(updates)
        cost.update(parameters=n, clients=fed.clients, plaintext_sum_s=plain_s,
                    max_abs_error=float((total - plain).abs().max()),
                    expansion=cost["bytes_per_client"] / max(cost["plaintext_bytes_per_client"], 1), trust=TRUST)
        return {"ckks": cost, **per_client(fed, ctx.data, subject.target, hardened.target, ctx.seed)}
