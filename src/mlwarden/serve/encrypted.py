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

import base64
import binascii

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


def depth(layers: list[tuple]) -> int:
    """Multiplicative levels the client's modulus chain must hold."""
    return sum(1 for layer in layers if layer[0] in ("linear", "square"))


def forward(layers: list[tuple], columns: list) -> list:
    """Ciphertexts of features (one per feature, samples in slots) -> ciphertexts of outputs."""
    for layer in layers:
        if layer[0] == "square":
            columns = [c.square() for c in columns]
            continue
        _, w, b = layer
        nxt = []
        for j in range(w.shape[0]):
            acc = None
            for i, c in enumerate(columns):
                wij = float(w[j, i])
                if wij == 0.0:
                    continue
                term = c * wij
                acc = term if acc is None else acc + term
            acc = acc if acc is not None else columns[0] * 0.0
            nxt.append(acc + float(b[j]))
        columns = nxt
    return columns


class BadCiphertext(ValueError):
    """A request whose context or ciphertexts cannot be used (the route answers 422)."""


def load_request(context_b64: str, inputs_b64: list[str], n_features: int, rows: int, layers) -> tuple:
    """(context, ciphertexts) from a request, refusing anything unusable before any computation."""
    import tenseal as ts
    if len(inputs_b64) != n_features:
        raise BadCiphertext(f"inputs: {len(inputs_b64)} ciphertexts; this model takes {n_features} features, one "
                            "ciphertext each")
    try:
        ctx = ts.context_from(base64.b64decode(context_b64, validate=True))
    except (binascii.Error, ValueError, TypeError, RuntimeError) as e:
        raise BadCiphertext(f"context: not a serialized TenSEAL context ({type(e).__name__})") from None
    if ctx.is_private():
        raise BadCiphertext("context: it holds the secret key; send the public context only "
                            "(serialize(save_secret_key=False)), the server must never see the key")
    cts = []
    for i, blob in enumerate(inputs_b64):
        try:
            c = ts.ckks_vector_from(ctx, base64.b64decode(blob, validate=True))
        except (binascii.Error, ValueError, TypeError, RuntimeError) as e:
            raise BadCiphertext(f"inputs[{i}]: not a CKKS vector of this context ({type(e).__name__})") from None
        if c.size() != rows:
            raise BadCiphertext(f"inputs[{i}]: holds {c.size()} samples, the request says rows = {rows}")
        cts.append(c)
    return ctx, cts


def answer(layers, cts) -> list[str]:
    try:
        out = forward(layers, cts)
    except (ValueError, RuntimeError) as e:   # SEAL: out of levels (scale out of bounds), mismatched parameters
        raise BadCiphertext(f"the ciphertexts cannot go through this network's {depth(layers)} multiplicative "
                            f"levels ({e}); give the context a longer modulus chain") from None
    return [base64.b64encode(c.serialize()).decode() for c in out]
