"""The FastAPI application behind `mlwarden serve`. Every client mistake is a 4xx JSON body
{"error": "..."} naming the field; the model is only called on validated input."""
from __future__ import annotations

import time

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from ..core.data import InputSpace
from ..core.errors import UserError
from ..core.target import Target, TorchTarget
from .guards import GuardConfig, Limits, QueryLog, key_id, retry_after_header, shape_output
from .prada import Prada
from .watermark import Watermark
from .protocol import InferRequest, InferResponse, ModelMetadata, TensorMeta

RANGE_TOLERANCE = 1e-6


class ClientError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        self.status, self.message, self.headers = status, message, headers or {}


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class BodyLimit:
    """Pure ASGI middleware (Starlette's BaseHTTPMiddleware costs about a millisecond a request): a body
    declared larger than the limit is refused with 413 before it is read; a body sent without a length
    is cut off at the limit and refused the same way."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        size = dict(scope["headers"]).get(b"content-length")
        if size is not None and (not size.isdigit() or int(size) > self.limit):
            return await _error(413, f"body of {size.decode(errors='replace')} bytes exceeds the limit of "
                                     f"{self.limit}")(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise ClientError(413, f"body exceeds the limit of {self.limit} bytes")
            return message

        return await self.app(scope, counted, send)


def build_app(target: Target, space: InputSpace, name: str, guards: GuardConfig) -> FastAPI:
    app = FastAPI(title=f"mlwarden serve: {name}", version="0.1.0",
                  description="Open Inference Protocol v2 with mlwarden guards; see /v2/models/{name}.")
    limits, log = Limits(guards), QueryLog(guards.query_log)
    detector = Prada(guards.detector_delta, guards.detector_min_queries) if guards.detector != "off" else None
    marker = Watermark(guards.watermark_key, guards.watermark_rate, guards.watermark_registry) \
        if guards.watermark_key else None
    app.state.limits, app.state.detector = limits, detector
    in_shape = list(target.input_shape)
    smoothed = guards.smoothing_sigma is not None
    if smoothed and (marker is not None or guards.output != "probabilities"):
        raise UserError("--smoothing answers labels (-1 for an abstention): it cannot be combined with "
                        "--output or a watermark")
    if smoothed:   # the network itself, not a scores-only wrapper: PREDICT draws from it directly
        from ..defenses.randomized_smoothing import ABSTAIN, predict
        if not isinstance(target, TorchTarget):
            raise UserError(f"--smoothing draws noisy copies through a PyTorch network; {target.name} is a "
                            f"{type(target).__name__}")
        base = target.module
        sigma = guards.smoothing_sigma * space.width

    app.add_middleware(BodyLimit, limit=guards.max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request, exc: RequestValidationError):
        e = exc.errors()[0]
        loc = ".".join(str(p) for p in e["loc"] if p != "body") or "body"
        msg = "body is not valid JSON" if e["type"] == "json_invalid" else e["msg"]
        return _error(400 if e["type"] == "json_invalid" else 422, f"{loc}: {msg}")

    @app.exception_handler(ClientError)
    async def client_error(_request, exc: ClientError):
        return _error(exc.status, exc.message, exc.headers)

    def authorize(request: Request) -> str | None:
        if not guards.api_keys:
            return None
        auth = request.headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        if token is None:
            raise ClientError(401, "missing API key: send 'Authorization: Bearer <key>'",
                              {"WWW-Authenticate": "Bearer"})
        if token not in guards.api_keys:
            raise ClientError(403, "API key not accepted")
        return token

    def check_name(model_name: str) -> None:
        if model_name != name:
            raise ClientError(404, f"model '{model_name}' is not served here (this server serves '{name}')")

    @app.get("/v2/health/live")
    def live():
        return {"live": True}

    @app.get("/v2/health/ready")
    def ready():
        return {"ready": True}

    @app.get("/v2/models/{model_name}", response_model=ModelMetadata)
    def metadata(model_name: str, request: Request):
        check_name(model_name)
        authorize(request)
        out_name, out_type, _ = shape_output(np.full((1, target.n_classes), 1.0 / target.n_classes), guards)
        out_shape = [-1] if guards.output == "label" else [-1, target.n_classes]
        extra = {}
        if smoothed:
            out_name, out_type, out_shape = "label", "INT64", [-1]
            extra = {"smoothing": {"sigma": guards.smoothing_sigma, "draws_per_row": guards.smoothing_draws,
                                   "alpha": guards.smoothing_alpha, "abstain_label": ABSTAIN}}
        return ModelMetadata(name=name, versions=["1"], platform="mlwarden/pytorch",
                             inputs=[TensorMeta(name="input", datatype="FP32", shape=[-1, *in_shape])],
                             outputs=[TensorMeta(name=out_name, datatype=out_type, shape=out_shape)],
                             parameters={"guards": guards.describe(), "input_range": [space.low, space.high],
                                         "n_classes": target.n_classes, **extra})

    @app.post("/v2/models/{model_name}/infer", response_model=InferResponse)
    async def infer(model_name: str, body: InferRequest, request: Request):
        t0 = time.monotonic()
        check_name(model_name)
        key = authorize(request)
        x = _validate(body, in_shape, space, guards)
        kid = key_id(key)
        if detector is not None and guards.detector == "block" and kid in detector.clients \
                and detector.clients[kid].flagged:
            log.write(key=kid, rows=len(x), status=403, reason="extraction suspected")
            raise ClientError(403, "this key is blocked: its queries look like a model-extraction attack")
        denied = limits.check(kid, len(x))
        if denied is not None:
            reason, retry = denied
            log.write(key=key_id(key), rows=len(x), status=429, reason=reason)
            headers = {"Retry-After": retry_after_header(retry)} if retry is not None else {}
            raise ClientError(429, reason, headers)
        if smoothed:   # Cohen et al.'s PREDICT: n forward passes a row, -1 when the vote is not significant
            labels = predict(base, torch.from_numpy(x), sigma, guards.smoothing_draws, target.n_classes,
                             guards.smoothing_alpha).numpy().astype(np.int64)
            if detector is not None:
                detector.observe(kid, x, labels)
            ms = round(1e3 * (time.monotonic() - t0), 2)
            log.write(key=kid, rows=len(x), status=200, ms=ms, input_sha=_digest(x),
                      forward_passes=len(x) * guards.smoothing_draws, abstained=int((labels == ABSTAIN).sum()))
            return JSONResponse({"model_name": name, "model_version": "1", "id": body.id,
                                 "parameters": {"forward_passes": len(x) * guards.smoothing_draws, "ms": ms},
                                 "outputs": [{"name": "label", "shape": [len(x)], "datatype": "INT64",
                                              "data": labels.tolist()}]})
        with torch.no_grad():
            probs = target.scores(torch.from_numpy(x)).double().numpy()
        if detector is not None:  # alerts go to the operator's log, never to the client
            st = detector.observe(kid, x, probs.argmax(1))
            if st.flagged:
                log.write(key=kid, rows=len(x), status=200, alert="extraction suspected", w=st.w,
                          distances=len(st.distances))
        if marker is not None:
            probs = marker.apply(x, probs, kid)
        out_name, out_type, values = shape_output(probs, guards)
        log.write(key=kid, rows=len(x), status=200, ms=round(1e3 * (time.monotonic() - t0), 2),
                  input_sha=_digest(x))
        # built as a plain dict and rendered directly: response_model stays for the OpenAPI schema, but
        # FastAPI's re-validation and jsonable_encoder pass over every number cost more than the model
        return JSONResponse({"model_name": name, "model_version": "1", "id": body.id, "parameters": {},
                             "outputs": [{"name": out_name, "shape": list(values.shape), "datatype": out_type,
                                          "data": values.reshape(-1).tolist()}]})

    return app


def _digest(x: np.ndarray) -> str:
    import hashlib
    return hashlib.sha256(x.tobytes()).hexdigest()[:16]


def _validate(body: InferRequest, in_shape: list[int], space: InputSpace, g: GuardConfig) -> np.ndarray:
    inp = body.inputs[0]
    field = "inputs.0"
    shape = inp.shape
    if any(not isinstance(s, int) or s < 0 or s > 10**7 for s in shape):
        raise ClientError(422, f"{field}.shape: dimensions must be integers in [0, 10^7], got {shape}")
    if list(shape[1:]) != in_shape and int(np.prod(shape[1:])) != int(np.prod(in_shape)):
        raise ClientError(422, f"{field}.shape: expected [n, {', '.join(map(str, in_shape))}], got {shape}")
    if shape[0] < 1 or shape[0] > g.max_batch:
        raise ClientError(413 if shape[0] > g.max_batch else 422,
                          f"{field}.shape: batch of {shape[0]} rows; allowed 1 to {g.max_batch}")
    try:
        arr = np.asarray(inp.data, dtype=np.float64).reshape(-1)
    except (ValueError, TypeError):
        raise ClientError(422, f"{field}.data: must be numbers (flat or nested lists)") from None
    if arr.size != int(np.prod(shape)):
        raise ClientError(422, f"{field}.data: {arr.size} values do not fill shape {shape}")
    if not np.isfinite(arr).all():
        raise ClientError(422, f"{field}.data: contains NaN or infinite values")
    lo, hi = space.low - RANGE_TOLERANCE, space.high + RANGE_TOLERANCE
    if arr.min() < lo or arr.max() > hi:
        raise ClientError(422, f"{field}.data: values must lie in [{space.low:g}, {space.high:g}]")
    return arr.astype(np.float32).reshape(shape[0], *in_shape)
