"""The client of `mlwarden serve --encrypted` (extra `[he]`): it holds the CKKS secret key, sends its public
context and the encrypted samples (one ciphertext per feature, samples in slots), and decrypts the scores.
`EncryptedHttpTarget` makes that client a Target, so the audit's attacks (model extraction) can measure what
an attacker gets through the encrypted route."""
from __future__ import annotations

import base64

import numpy as np
import torch

from ..core.errors import UserError
from ..core.extras import require
from ..core.target import Access, NumpyTarget


class EncryptedClient:
    def __init__(self, url: str, depth: int = 1, api_key: str | None = None, scale_bits: int | None = None,
                 timeout_s: float = 600.0, max_rows: int = 1024, http=None):
        """`url`: the model's base URL (http://HOST:PORT/v2/models/NAME); `depth`: the network's multiplicative
        levels (the server's /encrypted-infer error names them; 1 for a linear model, 3 for square_mlp).
        The ring is 8192 (4,096 samples a ciphertext) while the chain fits its 218 bits: scale 2^40 up to depth
        2, 2^30 at depth 3; deeper networks get 16384. `http`: the httpx.Client to send through (default: one
        of io/net's, which holds each request to $MLWARDEN_HTTP_DEADLINE)."""
        ts = require("tenseal", "he", "encrypted inference")
        require("httpx", "serve", "the encrypted-inference client")
        if scale_bits is None:
            scale_bits = 40 if 120 + depth * 40 <= 218 else 30
        ring = 8192 if 60 + 60 + depth * scale_bits <= 218 else 16384
        self.slots = min(ring // 2, max_rows)   # samples a request: the server's --max-batch (1024 by default)
        self.ctx = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=ring,
                              coeff_mod_bit_sizes=[60, *([scale_bits] * depth), 60])
        self.ctx.global_scale = 2 ** scale_bits
        self.public = base64.b64encode(self.ctx.serialize(save_secret_key=False)).decode()
        self.url, self.api_key, self.timeout_s, self.http = url.rstrip("/"), api_key, timeout_s, http
        self.sent_bytes = self.received_bytes = 0

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Scores for the rows of x, computed by the server on ciphertexts."""
        import json

        import httpx
        import tenseal as ts

        from . import net
        url = f"{self.url}/encrypted-infer"
        flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        out = []
        http = self.http or net.client(timeout=self.timeout_s)
        try:
            for start in range(0, len(flat), self.slots):
                part = flat[start:start + self.slots]
                body = {"context": self.public, "rows": len(part),
                        "inputs": [base64.b64encode(ts.ckks_vector(self.ctx, part[:, i].tolist()).serialize()).decode()
                                   for i in range(part.shape[1])]}
                headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
                content = json.dumps(body).encode()
                try:   # the whole exchange within $MLWARDEN_HTTP_DEADLINE (default: the read timeout)
                    r = net.exchange(http, "POST", url, content=content, limit=1 << 30, what=url,
                                     headers={**headers, "Content-Type": "application/json"},
                                     seconds=net.deadline_s(self.timeout_s))
                except httpx.HTTPError as e:
                    raise UserError(f"{url} unreachable: {type(e).__name__}: {e}") from None
                self.sent_bytes += len(content)
                self.received_bytes += len(r.body)
                if r.status != 200:
                    raise UserError(f"{url} answered {r.status}: {' '.join(r.text[:300].split())}")
                try:
                    cols = [ts.ckks_vector_from(self.ctx, base64.b64decode(c, validate=True)).decrypt()
                            for c in json.loads(r.body)["outputs"]]
                    scores = np.array(cols, dtype=np.float64).T
                    if scores.ndim != 2 or scores.shape[0] != len(part):
                        raise ValueError(f"{len(part)} rows were sent, the answer has shape {list(scores.shape)}")
                except (KeyError, TypeError, ValueError, IndexError, RuntimeError, RecursionError) as e:
                    raise UserError(f"{url}: cannot read the answer ({type(e).__name__}: {str(e)[:120]})") from None
                if not np.isfinite(scores).all():
                    raise UserError(f"{url} answered scores that decrypt to NaN or infinity")
                out.append(scores)
        finally:
            if http is not self.http:
                http.close()
        return np.concatenate(out)


class EncryptedHttpTarget(NumpyTarget):
    """A model behind `mlwarden serve --encrypted`, queried with encrypted samples: exact scores."""

    def __init__(self, client: EncryptedClient, n_classes: int, input_shape, name: str = "encrypted endpoint"):
        super().__init__(self._probs, n_classes, input_shape, Access.SCORES, name, kind="encrypted-http")
        self.client = client

    def _probs(self, x: np.ndarray) -> np.ndarray:
        return torch.from_numpy(self.client.logits(x)).softmax(1).numpy()
