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
answered from a cache and not paid for twice. Access (scores or labels) is detected from the answers.

An answer is trusted for nothing: each request must complete within $MLWARDEN_HTTP_DEADLINE seconds in all
and hold at most MAX_ANSWER bytes (io/net.py), and what it holds must be JSON of the protocol's shape with
one finite score (or one class id) per row sent; anything else is a one-line error naming the endpoint."""
from __future__ import annotations

import hashlib
import math
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ..core.errors import QueryBudgetExceeded, UserError
from ..core.files import MAX_NESTING, nesting
from ..core.target import Access, Target
from . import net

MAX_ANSWER = 64 << 20   # bytes of one answer (256 rows of 1000 scores as JSON are about 5 MB)


class HttpTarget(Target):
    kind = "http"

    def __init__(self, url: str, n_classes: int, input_shape, *, api_key: str | None = None,
                 chunk: int = 256, concurrency: int = 4, retries: int = 4, timeout_s: float = 30.0,
                 max_wait_s: float = 60.0, name: str | None = None, outputs: list[str] | None = None,
                 template: dict | None = None, response_path: str | None = None, deadline_s: float | None = None):
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
        self.deadline_s = net.deadline_s() if deadline_s is None else deadline_s   # per request, in all
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
        return net.client(headers=headers, timeout=timeout_s, follow_redirects=False,
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
        """The answers in a reply, one row per input row: a ValueError (or KeyError) saying what is wrong."""
        if self.protocol == "oip":
            outs = payload.get("outputs") if isinstance(payload, dict) else None
            if not isinstance(outs, list) or not outs or not all(isinstance(o, dict) for o in outs):
                raise ValueError("no list of outputs (OIP v2 answers {\"outputs\": [{\"name\", \"shape\", "
                                 "\"data\"}]})")
            out = next((o for o in outs if o.get("name") == self.outputs[0]), None) if self.outputs else outs[0]
            if out is None:
                raise UserError(f"endpoint {self._infer_url()} did not answer the output '{self.outputs[0]}' "
                                f"(it answered {[str(o.get('name'))[:40] for o in outs[:10]]})")
            shape = out.get("shape")
            if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
                raise ValueError(f"output shape {str(shape)[:80]} is not a list of integers")
            values = _numbers(out.get("data")).reshape(shape)
        elif self.protocol == "json":
            values = _numbers(follow_path(payload, self.response_path))
        else:
            values = _numbers(payload.get("predictions", payload.get("outputs")) if isinstance(payload, dict)
                              else payload)
        if values.ndim == 0 or values.shape[0] != n or values.size % n:
            raise ValueError(f"{n} rows were sent but the answer has shape {list(values.shape)}")
        values = values.reshape(n, -1)
        if not np.isfinite(values).all():
            raise UserError(f"endpoint {self._infer_url()} answered NaN or infinite scores; an audit cannot measure "
                            "anything from them")
        if values.shape[1] == 1:   # labels: class ids
            if (values != np.round(values)).any() or values.min() < 0 or values.max() >= self.n_classes:
                raise ValueError(f"one value per row that is not a class id in 0..{self.n_classes - 1}")
        elif values.shape[1] < self.n_classes:
            raise ValueError(f"{values.shape[1]} scores per row, but the data has {self.n_classes} classes")
        return values

    def _post(self, x: np.ndarray) -> np.ndarray:
        import httpx
        waited = 0.0
        for attempt in range(self.retries + 1):
            try:
                r = net.exchange(self.client, "POST", self._infer_url(), json=self._body(x), limit=MAX_ANSWER,
                                 seconds=self.deadline_s, what=f"endpoint {self._infer_url()}")
            except httpx.TransportError as e:
                if attempt == self.retries:
                    raise UserError(f"endpoint {self._infer_url()} unreachable: {e}") from None
                time.sleep(0.2 * 2 ** attempt)
                continue
            self.http_requests += 1
            if r.status == 429:
                retry = _seconds(r.headers.get("retry-after"))
                if retry is None:
                    raise QueryBudgetExceeded(f"the server refused more queries: {r.text[:200]}")
                waited += retry
                if waited > self.max_wait_s:
                    raise QueryBudgetExceeded(f"rate limited for over {self.max_wait_s:g}s")
                self.rate_limited_s += retry
                time.sleep(retry)
                continue
            if r.status >= 500 and attempt < self.retries:
                time.sleep(0.2 * 2 ** attempt)
                continue
            if 300 <= r.status < 400:
                raise UserError(f"endpoint {self._infer_url()} redirects to {r.headers.get('location', '?')[:200]}: "
                                "give the final URL (redirects are not followed, so the API key stays with its host)")
            if r.status >= 400:
                hint = ""
                if r.status >= 500 and self.protocol == "oip" and len(self.wire_shape) > 1 and \
                        not self.meta.get("inputs"):
                    hint = (f" (the server declares no input shape and got rows of shape {list(self.wire_shape)}: a "
                            f"model trained on flat features needs --input-shape {int(np.prod(self.wire_shape))})")
                raise UserError(f"endpoint {self._infer_url()} answered {r.status}: {' '.join(r.text[:300].split())}"
                                + hint)
            try:
                return self._parse(_json(r.body), len(x))
            except (ValueError, KeyError, TypeError, IndexError, RecursionError) as e:
                raise UserError(f"endpoint {self._infer_url()}: cannot read the answer ({type(e).__name__}: "
                                f"{str(e)[:160]}): {' '.join(r.text[:200].split())}") from None
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
            r = net.exchange(self.client, "GET", self.url, limit=1 << 20, seconds=self.deadline_s,
                             what=f"endpoint {self.url}")
            meta = _json(r.body) if r.status == 200 else {}
        except UserError:   # no complete answer in time: the endpoint is not one an audit can use
            raise
        except Exception:  # noqa: BLE001 - metadata is optional: a server without it is still audited
            return {}
        return meta if isinstance(meta, dict) else {}

    def _detect_access(self) -> Access:
        params = self.meta.get("parameters")
        rng = params.get("input_range") if isinstance(params, dict) else None
        if not (isinstance(rng, list) and len(rng) == 2 and all(isinstance(v, (int, float)) for v in rng)
                and all(np.isfinite(rng))):
            rng = [0.0, 1.0]   # metadata is a hint: one the server got wrong is ignored
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


def _json(body: bytes):
    """A reply's JSON, nested at most MAX_NESTING levels (NaN and Infinity parse, and are refused as scores)."""
    import json
    value = json.loads(body)
    if nesting(value) > MAX_NESTING:
        raise ValueError(f"nested more than {MAX_NESTING} levels deep")
    return value


def _numbers(value) -> np.ndarray:
    """A list (of lists) of numbers as float64; anything else (strings, objects, ragged rows) a ValueError."""
    if not isinstance(value, list):
        raise ValueError(f"expected a list of numbers, got {type(value).__name__}")
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise ValueError("expected a list (of lists) of numbers with one row per input") from None


def _seconds(text: str | None) -> float | None:
    """A Retry-After header in seconds (finite, at least 0), or None when absent or unreadable."""
    try:
        value = float(text) if text is not None else math.nan
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None
