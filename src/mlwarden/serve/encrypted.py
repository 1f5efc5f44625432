"""Encrypted inference (CKKS through TenSEAL, extra `[he]`): the client encrypts, the server computes on
ciphertexts, only the client decrypts (in the spirit of CryptoNets, Gilad-Bachrach et al. 2016).

Packing: ciphertext i holds feature i of up to poly_modulus_degree / 2 samples, so one request of d
ciphertexts carries thousands of samples, and a linear layer is d x k plaintext multiplications and additions
(no rotations). Networks: linear layers and square activations (zoo.Square) only; each costs one level of the
client's modulus chain. What the server sees: the client's public context (never its secret key: a private
context is refused) and ciphertexts; it answers exact scores (logits) that output rounding, the extraction
detector and the watermark cannot touch: a rate limit and a query budget are the only guards left.

Route: POST /v2/models/{name}/encrypted-infer, JSON {"context": base64, "inputs": [base64 x d], "rows": n}
-> {"outputs": [base64 x classes], "rows": n}, with its own body limit (--encrypted-max-body)."""
from __future__ import annotations

import torch
from torch import nn

from ..core.errors import UserError

def he_layers(module: nn.Module) -> list[tuple]:
    """The network as [("linear", W, b) | ("square",)], or a UserError naming the first layer it cannot run."""
    from ..core.zoo import Square
    out = []
    for m in module.modules():
        if list(m.children()):
            continue
        if isinstance(m, nn.Linear):
            b = m.bias.detach().double() if m.bias is not None else torch.zeros(m.out_features, dtype=torch.float64)
            out.append(("linear", m.weight.detach().double(), b))
        elif isinstance(m, Square):
            out.append(("square",))
        elif not isinstance(m, (nn.Flatten, nn.Identity, nn.Dropout)):
            raise UserError(f"--encrypted computes linear layers and square activations on ciphertexts; this network "
                            f"has a {type(m).__name__} (train one like mlwarden.core.zoo:square_mlp)")
    if not out or out[0][0] != "linear":
        raise UserError("--encrypted needs a network that starts with a linear layer")
    return out


def as_lists(layers: list[tuple]) -> list:
    """The layers in the plain form the worker takes (lists of floats: it imports no torch)."""
    return [(layer[0],) if layer[0] == "square" else ("linear", layer[1].tolist(), layer[2].tolist())
            for layer in layers]


class HEWorker:
    """One worker process for the CKKS work, started on first use (spawn: nothing of this process is
    inherited), with a memory limit and a deadline per request. A request that exceeds either, or crashes
    the worker, is refused with a BadCiphertext and the worker is replaced."""

    def __init__(self, max_memory_bytes: int, timeout_s: float):
        self.max_memory_bytes, self.timeout_s = max_memory_bytes, timeout_s
        self.pool = None

    def _start(self):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        from .he_worker import limit_memory
        self.pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=limit_memory,
                                        initargs=(self.max_memory_bytes,))

    def _reset(self):
        if self.pool is not None:
            for p in list(getattr(self.pool, "_processes", {}).values()):
                p.kill()
            self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = None

    def run(self, layers, context_b64, inputs_b64, n_features, rows) -> list[str]:
        from concurrent.futures import TimeoutError as FutureTimeout
        from concurrent.futures.process import BrokenProcessPool

        from .he_worker import BadCiphertext, compute
        if self.pool is None:
            self._start()
        future = self.pool.submit(compute, layers, context_b64, inputs_b64, n_features, rows)
        try:
            return future.result(timeout=self.timeout_s)
        except BadCiphertext:
            raise
        except FutureTimeout:
            self._reset()
            raise BadCiphertext(f"the encrypted computation took longer than {self.timeout_s:g} s; send fewer "
                                "or smaller ciphertexts") from None
        except (BrokenProcessPool, MemoryError):
            self._reset()
            raise BadCiphertext(f"the ciphertexts need more than the server's {self.max_memory_bytes // 2**20} MiB for "
                                "encrypted work (one chunk per ciphertext, a ring of 8192 or 16384)") from None

    def close(self):
        self._reset()
