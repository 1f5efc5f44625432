"""A live prediction endpoint as a Target: Open Inference Protocol v2 (KServe, Triton, MLServer,
`mlwarden serve`), MLflow `/invocations` and TF Serving `:predict` request shapes.

httpx with connection reuse; rows are sent in chunks over a bounded number of concurrent requests;
transient failures are retried with exponential backoff; 429 answers are honoured by sleeping for
Retry-After (a 429 without it, an exhausted server-side budget, ends the attack); repeated inputs are
answered from a cache and not paid for twice. Access (scores or labels) is detected from the answers."""
from __future__ import annotations

import hashlib
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ..core.errors import QueryBudgetExceeded, UserError
from ..core.target import Access, Target


class HttpTarget(Target):
    kind = "http"

    def __init__(self, url: str, n_classes: int, input_shape, *, api_key: str | None = None,
                 chunk: int = 256, concurrency: int = 4, retries: int = 4, timeout_s: float = 30.0,
                 max_wait_s: float = 60.0, name: str | None = None):
        import httpx
        super().__init__(Access.SCORES, n_classes, input_shape, name or url)
        self.url = url.rstrip("/")
        self.protocol = ("mlflow" if self.url.endswith("/invocations") else
                         "tfserving" if self.url.endswith(":predict") else "oip")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(headers=headers, timeout=timeout_s,
                                   limits=httpx.Limits(max_connections=concurrency))
        self.chunk, self.concurrency, self.retries, self.max_wait_s = chunk, concurrency, retries, max_wait_s
        self.cache: dict[bytes, np.ndarray] = {}
        self.http_requests = 0
        self.cache_hits = 0
        self.rate_limited_s = 0.0
        self.access = self._detect_access()

    # -- protocol ---------------------------------------------------------------------------------
    def _infer_url(self) -> str:
        return self.url + "/infer" if self.protocol == "oip" else self.url

    def _body(self, x: np.ndarray) -> dict:
        if self.protocol == "oip":
            return {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                "data": x.reshape(-1).tolist()}]}
        if self.protocol == "mlflow":
            return {"inputs": x.tolist()}
        return {"instances": x.tolist()}

    def _parse(self, payload: dict, n: int) -> np.ndarray:
        if self.protocol == "oip":
            out = payload["outputs"][0]
            return np.asarray(out["data"], dtype=np.float64).reshape(out["shape"])
        values = payload.get("predictions", payload.get("outputs"))
        return np.asarray(values, dtype=np.float64).reshape(n, -1)

    def _post(self, x: np.ndarray) -> np.ndarray:
        import httpx
        waited = 0.0
        for attempt in range(self.retries + 1):
            try:
                r = self.client.post(self._infer_url(), json=self._body(x))
            except httpx.TransportError as e:
                if attempt == self.retries:
                    raise UserError(f"endpoint {self.url} unreachable: {e}") from None
                time.sleep(0.2 * 2 ** attempt)
                continue
            self.http_requests += 1
            if r.status_code == 429:
                retry = r.headers.get("retry-after")
                if retry is None:
                    raise QueryBudgetExceeded(f"the server refused more queries: {r.text[:200]}")
                wait = float(retry)
                waited += wait
                if waited > self.max_wait_s:
                    raise QueryBudgetExceeded(f"rate limited for over {self.max_wait_s:g}s")
                self.rate_limited_s += wait
                time.sleep(wait)
                continue
            if r.status_code >= 500 and attempt < self.retries:
                time.sleep(0.2 * 2 ** attempt)
                continue
            if r.status_code >= 400:
                raise UserError(f"endpoint {self.url} answered {r.status_code}: {r.text[:300]}")
            return self._parse(r.json(), len(x))
        raise UserError(f"endpoint {self.url} kept failing after {self.retries} retries")

    # -- answers ----------------------------------------------------------------------------------
    def _answers(self, x: torch.Tensor) -> np.ndarray:
        a = x.detach().cpu().numpy().astype(np.float32).reshape(len(x), *self.input_shape)
        keys = [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in a]
        todo = [i for i, k in enumerate(keys) if k not in self.cache]
        self.cache_hits += len(a) - len(todo)
        # distinct rows only: a row repeated inside one batch is paid for once
        first = {}
        for i in todo:
            first.setdefault(keys[i], i)
        uniq = list(first.values())
        self._spend(len(uniq))
        chunks = [uniq[i:i + self.chunk] for i in range(0, len(uniq), self.chunk)]
        with ThreadPoolExecutor(self.concurrency) as pool:
            results = list(pool.map(lambda idx: self._post(a[idx]), chunks))
        for idx, res in zip(chunks, results):
            for i, row in zip(idx, res):
                self.cache[keys[i]] = row
        return np.stack([self.cache[k] for k in keys])

    def metadata(self) -> dict:
        """OIP model metadata (empty for other protocols or when the server does not give it)."""
        if self.protocol != "oip":
            return {}
        try:
            r = self.client.get(self.url)
            return r.json() if r.status_code == 200 else {}
        except Exception:  # noqa: BLE001 - metadata is optional
            return {}

    def _detect_access(self) -> Access:
        rng = self.metadata().get("parameters", {}).get("input_range", [0.0, 1.0])
        probe = torch.full((1, *self.input_shape), float(rng[0]) + 0.5 * (float(rng[1]) - float(rng[0])))
        out = self._answers(probe)
        self.queries = 0  # the probe is set-up, not an attack's cost
        if out.ndim == 1 or out.shape[-1] == 1:
            return Access.LABELS
        return Access.SCORES

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        if not self.access.allows(Access.SCORES):
            raise PermissionError(f"{self.name} answers labels only")
        out = torch.from_numpy(self._answers(x)).float()
        # probabilities, possibly rounded or cut to the top k, are passed on as the server gave them
        return out if ((out >= 0) & (out <= 1)).all() else out.softmax(1)

    def labels(self, x: torch.Tensor) -> torch.Tensor:
        out = self._answers(x)
        if out.ndim == 1 or out.shape[-1] == 1:
            return torch.from_numpy(out.reshape(-1)).long()
        return torch.from_numpy(out).argmax(1)

    def describe(self) -> dict:
        return {**super().describe(), "url": self.url, "protocol": self.protocol}
