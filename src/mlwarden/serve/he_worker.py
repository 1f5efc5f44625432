"""The CKKS work of `serve --encrypted`, run in a separate process (serve/encrypted.py starts it) with a memory
limit and a deadline: ciphertexts come from strangers, and a small compressed one can expand to gigabytes or
carry many chunks, so deserializing and computing never happens in the server's own process. This module
imports only TenSEAL (no torch), so the worker starts in a fraction of a second."""
from __future__ import annotations

import base64
import binascii


class BadCiphertext(ValueError):
    """A request whose context or ciphertexts cannot be used (the route answers 422)."""


def limit_memory(max_bytes: int) -> None:
    import resource
    resource.setrlimit(resource.RLIMIT_DATA, (max_bytes, max_bytes))


def _check_fresh(vector, ctx, i: int) -> None:
    """A ciphertext fresh from encryption under the request's context: at the context's first level and its
    scale, two polynomials, not transparent. SEAL's own load accepts any ciphertext whose parameters are in
    the chain, such as one encrypted at another scale (the answer would then be wrong without an error).
    What no check can see is a ciphertext made under other keys with the same parameters (telling keys
    apart from ciphertexts would break the scheme's security): its answer can only be read with those keys."""
    seal = ctx.seal_context().data
    first, scale = seal.first_parms_id(), ctx.global_scale
    for chunk in vector.ciphertext():
        if chunk.parms_id() != first:
            raise BadCiphertext(f"inputs[{i}]: not at the context's first level (encrypt it afresh under the context "
                                "sent with it)")
        if chunk.scale != scale:
            raise BadCiphertext(f"inputs[{i}]: its scale 2^{_log2(chunk.scale)} is not the context's global scale "
                                f"2^{_log2(scale)}: it was made under another context")
        if chunk.size() != 2 or chunk.is_transparent():
            raise BadCiphertext(f"inputs[{i}]: not a freshly encrypted ciphertext ({chunk.size()} polynomials)")


def _log2(x: float) -> str:
    import math
    return f"{math.log2(x):.4g}" if x > 0 else str(x)


def compute(layers: list, context_b64: str, inputs_b64: list[str], n_features: int, rows: int) -> list[str]:
    """Ciphertexts of features (one per feature, samples in slots) -> base64 ciphertexts of outputs.
    `layers`: [("linear", W rows as lists, b as a list) | ("square",)]."""
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
    columns = []
    for i, blob in enumerate(inputs_b64):
        try:
            c = ts.ckks_vector_from(ctx, base64.b64decode(blob, validate=True))
        except (binascii.Error, ValueError, TypeError, RuntimeError) as e:
            raise BadCiphertext(f"inputs[{i}]: not a CKKS vector of this context ({type(e).__name__})") from None
        if c.size() != rows:
            raise BadCiphertext(f"inputs[{i}]: holds {c.size()} samples, the request says rows = {rows}")
        _check_fresh(c, ctx, i)
        columns.append(c)
    try:
        for layer in layers:
            if layer[0] == "square":
                columns = [c.square() for c in columns]
                continue
            _, w, b = layer
            nxt = []
            for j, row in enumerate(w):
                acc = None
                for wij, c in zip(row, columns):
                    if wij == 0.0:
                        continue
                    term = c * wij
                    acc = term if acc is None else acc + term
                acc = acc if acc is not None else columns[0] * 0.0
                nxt.append(acc + b[j])
            columns = nxt
    except (ValueError, RuntimeError) as e:   # SEAL: out of levels, mismatched chunks or parameters
        raise BadCiphertext(f"the ciphertexts cannot go through this network's {len(layers)} layers ({e}); "
                            "give the context a longer modulus chain") from None
    return [base64.b64encode(c.serialize()).decode() for c in columns]
