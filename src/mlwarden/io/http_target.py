"""A live prediction endpoint as a Target: Open Inference Protocol v2 (KServe, Triton, MLServer,
`mlwarden serve`), MLflow `/invocations` and TF Serving `:predict` request shapes, and any JSON API
described by a request template and a response path.

For OIP v2 the model's metadata (`GET /v2/models/NAME`) gives the input's name, shape and datatype, which
every request then uses; `outputs` names the outputs to ask for (MLServer's scikit-learn runtime answers
`predict` unless `predict_proba` is requested). A URL given with its `/infer` suffix is accepted. Redirects
are not followed: the API key would travel with them.

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
                 max_wait_s: float = 60.0, name: str | None = None, outputs: list[str] | None = None,
                 template: dict | None = None, response_path: str | None = None):
        import httpx  # noqa: F401  (a missing extra fails here, before anything else)
        url = url.rstrip("/")
        if url.endswith("/infer"):
            url = url.removesuffix("/infer")
        super().__init__(Access.SCORES, n_classes, input_shape, name or url)
        self.url = url
        self.outputs = list(outputs or [])
        self.template, self.response_path = template, response_path
        self.protocol = ("json" if template is not None else "mlflow" if self.url.endswith("/invocations") else
                         "tfserving" if self.url.endswith(":predict") else "oip")
        if (template is None) != (response_path is None):
            raise UserError("a custom JSON API needs both a request template and a response path")
        self._client_args = ({"Authorization": f"Bearer {api_key}"} if api_key else {}, timeout_s, concurrency)
        self.client = self._make_client()
        self.chunk, self.concurrency, self.retries, self.max_wait_s = chunk, concurrency, retries, max_wait_s
        self.cache: dict[bytes, np.ndarray] = {}
        self.http_requests = 0
        self.cache_hits = 0
        self.rate_limited_s = 0.0
        self.meta = self.metadata()
        self.input_name, self.datatype, self.wire_shape = self._input_spec()
        self.access = self._detect_access()

    def _make_client(self):
        import httpx
        headers, timeout_s, concurrency = self._client_args
        return httpx.Client(headers=headers, timeout=timeout_s, follow_redirects=False,
                            limits=httpx.Limits(max_connections=concurrency))

    # An open HTTP client cannot travel to a backend's worker: the target travels as its description and
    # the worker opens a client of its own (same URL, key, limits; the answers cached so far come along).
    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "client"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.client = self._make_client()

    # -- protocol ---------------------------------------------------------------------------------
    def _input_spec(self) -> tuple[str, str, tuple[int, ...]]:
        """The input's name, datatype and per-row shape as the server declares them (OIP metadata), else
        ('input', 'FP32', the data's shape). A declared shape that holds the same number of values as a row
        is what each row is reshaped to (digits 1x8x8 sent to a model that takes 64 features)."""
        inputs = self.meta.get("inputs") or []
        if not inputs or not isinstance(inputs[0], dict):
            return "input", "FP32", tuple(self.input_shape)
        spec = inputs[0]
        dims = [d for d in (spec.get("shape") or [])[1:] if isinstance(d, int)]
        shape = tuple(self.input_shape)
        if dims and all(d > 0 for d in dims) and int(np.prod(dims)) == int(np.prod(self.input_shape)):
            shape = tuple(dims)
        elif dims and all(d > 0 for d in dims):
            raise UserError(f"endpoint {self.url} declares input shape {[-1, *dims]}; the data has samples of shape "
                            f"{list(self.input_shape)} ({int(np.prod(self.input_shape))} values)")
        dtype = spec.get("datatype") if spec.get("datatype") in ("FP32", "FP64") else "FP32"
        return str(spec.get("name") or "input"), dtype, shape

    def _infer_url(self) -> str:
        return self.url + "/infer" if self.protocol == "oip" else self.url

    def _body(self, x: np.ndarray) -> dict:
        if self.protocol == "oip":
            rows = x.reshape(len(x), *self.wire_shape)
            body = {"inputs": [{"name": self.input_name, "shape": list(rows.shape), "datatype": self.datatype,
                                "data": rows.reshape(-1).tolist()}]}
            if self.outputs:
                body["outputs"] = [{"name": n} for n in self.outputs]
            return body
        if self.protocol == "mlflow":
            return {"inputs": x.tolist()}
        if self.protocol == "json":
            return fill_template(self.template, x.reshape(len(x), -1).tolist())
        return {"instances": x.tolist()}

    def _parse(self, payload, n: int) -> np.ndarray:
        if self.protocol == "oip":
            outs = payload["outputs"]
            out = next((o for o in outs if o.get("name") == self.outputs[0]), None) if self.outputs else outs[0]
            if out is None:
                raise UserError(f"endpoint {self._infer_url()} did not answer the output '{self.outputs[0]}' "
                                f"(it answered {[o.get('name') for o in outs]})")
            return np.asarray(out["data"], dtype=np.float64).reshape(out["shape"])
        if self.protocol == "json":
            return np.asarray(follow_path(payload, self.response_path), dtype=np.float64).reshape(n, -1)
        values = payload.get("predictions", payload.get("outputs")) if isinstance(payload, dict) else payload
        return np.asarray(values, dtype=np.float64).reshape(n, -1)

    def _post(self, x: np.ndarray) -> np.ndarray:
        import httpx
        waited = 0.0
        for attempt in range(self.retries + 1):
            try:
                r = self.client.post(self._infer_url(), json=self._body(x))
            except httpx.TransportError as e:
                if attempt == self.retries:
                    raise UserError(f"endpoint {self._infer_url()} unreachable: {e}") from None
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
            if 300 <= r.status_code < 400:
                raise UserError(f"endpoint {self._infer_url()} redirects to {r.headers.get('location', '?')}: give "
                                "the final URL (redirects are not followed, so the API key stays with its host)")
            if r.status_code >= 400:
                hint = ""
                if r.status_code >= 500 and self.protocol == "oip" and len(self.wire_shape) > 1 and \
                        not self.meta.get("inputs"):
                    hint = (f" (the server declares no input shape and got rows of shape {list(self.wire_shape)}: a "
                            f"model trained on flat features needs --input-shape {int(np.prod(self.wire_shape))})")
                raise UserError(f"endpoint {self._infer_url()} answered {r.status_code}: {' '.join(r.text[:300].split())}"
                                + hint)
            try:
                return self._parse(r.json(), len(x))
            except (ValueError, KeyError, TypeError, IndexError) as e:
                raise UserError(f"endpoint {self._infer_url()}: cannot read the answer ({type(e).__name__}: "
                                f"{str(e)[:120]}): {r.text[:200]}") from None
        raise UserError(f"endpoint {self._infer_url()} kept failing after {self.retries} retries")

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
            meta = r.json() if r.status_code == 200 else {}
            return meta if isinstance(meta, dict) else {}
        except Exception:  # noqa: BLE001 - metadata is optional
            return {}

    def _detect_access(self) -> Access:
        rng = (self.meta.get("parameters") or {}).get("input_range") or [0.0, 1.0]
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
        return {**super().describe(), "url": self.url, "protocol": self.protocol, "input_name": self.input_name,
                "wire_shape": list(self.wire_shape), "outputs": self.outputs or None}


def fill_template(template, rows: list):
    """The request body: the template with every string "{rows}" replaced by the rows (a list of lists)."""
    if template == "{rows}":
        return rows
    if isinstance(template, dict):
        return {k: fill_template(v, rows) for k, v in template.items()}
    if isinstance(template, list):
        return [fill_template(v, rows) for v in template]
    return template


def follow_path(payload, path: str):
    """The value at a dotted path in the answer ('predictions', 'result.probs', '' or '.' for the answer
    itself: an API that answers a bare list); list indices are numbers ('outputs.0.data')."""
    value = payload
    for part in [p for p in path.split(".") if p]:
        if isinstance(value, list) and part.isdigit():
            value = value[int(part)]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            raise KeyError(f"no '{part}' in the answer at '{path}'")
    return value
