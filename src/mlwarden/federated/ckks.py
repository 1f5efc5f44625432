"""CKKS (Cheon, Kim, Kim & Song 2017) through TenSEAL (extra `[he]`): updates packed densely into ciphertext
slots (poly_modulus_degree / 2 numbers per ciphertext), added as ciphertexts, decrypted only as a sum.

Trust: one CKKS key pair is shared by the clients; the server holds only the public context (it can add, not
decrypt). Any client, or anyone a client colludes with, holds the secret key and can decrypt every update it
intercepts: this protects against a curious server, not against a colluding client."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ..core.extras import require


@dataclass
class CKKS:
    poly_modulus_degree: int = 8192
    scale_bits: int = 40
    _ctx: object = field(default=None, repr=False)

    @property
    def context(self):
        if self._ctx is None:
            ts = require("tenseal", "he", "CKKS secure aggregation")
            middle = [self.scale_bits] * (2 if self.poly_modulus_degree <= 8192 else 6)
            ctx = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=self.poly_modulus_degree,
                             coeff_mod_bit_sizes=[60, *middle, 60])
            ctx.global_scale = 2 ** self.scale_bits
            self._ctx = ctx
        return self._ctx

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2

    def encrypt(self, vec: torch.Tensor) -> list:
        import tenseal as ts
        flat = vec.detach().double().flatten()
        return [ts.ckks_vector(self.context, flat[i:i + self.slots].tolist()) for i in range(0, len(flat), self.slots)]

    @staticmethod
    def add(encrypted: list[list]) -> list:
        total = [c.copy() for c in encrypted[0]]
        for other in encrypted[1:]:
            for a, b in zip(total, other):
                a += b
        return total

    def decrypt(self, encrypted: list, n: int) -> torch.Tensor:
        return torch.tensor([v for c in encrypted for v in c.decrypt()][:n], dtype=torch.float64)

    @staticmethod
    def nbytes(encrypted: list) -> int:
        return sum(len(c.serialize()) for c in encrypted)

    def secure_sum(self, updates: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The sum of the rows, computed on ciphertexts: (sum, costs)."""
        t0 = time.perf_counter()
        enc = [self.encrypt(u) for u in updates]
        t1 = time.perf_counter()
        total = self.add(enc)
        t2 = time.perf_counter()
        out = self.decrypt(total, updates.shape[1]).to(updates.dtype)
        t3 = time.perf_counter()
        return out, {"encrypt_s_per_client": (t1 - t0) / len(updates), "sum_s": t2 - t1, "decrypt_s": t3 - t2,
                     "ciphertexts_per_client": len(enc[0]), "bytes_per_client": self.nbytes(enc[0]),
                     "plaintext_bytes_per_client": 4 * updates.shape[1]}
