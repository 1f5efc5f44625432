"""The FastAPI application behind `mlwarden serve`. Every client mistake is a 4xx JSON body
{"error": "..."} naming the field; the model is only called on validated input."""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import re
import secrets
import time

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from .._version import __version__

from ..core.data import InputSpace
from ..core.errors import UserError
from ..core.target import Target, TorchTarget
from .guards import GuardConfig, Limits, QueryLog, key_id, retry_after_header, shape_output
from .prada import Prada
from .watermark import Watermark
from .protocol import InferRequest, InferResponse, ModelMetadata, ModelReady, ServerMetadata, TensorMeta

RANGE_TOLERANCE = 1e-6
logger = logging.getLogger("mlwarden.serve")


class ClientError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        self.status, self.message, self.headers = status, message, headers or {}


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


ENCRYPTED_ROUTE = re.compile(r"/v2/models/[^/]+/encrypted-infer")   # the one route with a larger body limit
READY_ROUTE = re.compile(r"/v2/models/[^/]+(/versions/[^/]+)?/ready")  # the model routes open without a key


KID = "mlwarden.key_id"   # the scope entry where the Gate leaves the id of the key a request was accepted with
STORAGE_RETRY_S = 5


class Gate:
    """Pure ASGI middleware (Starlette's BaseHTTPMiddleware costs about a millisecond a request) that does
    what must happen before a body is read: answer 503 to every model request while the query log or the
    watermark registry cannot be written, refuse binary-tensor requests (415) and bodies declared larger
    than the limit (413), authenticate model routes (400 for more than one Authorization header, 401/403)
    and leave the key's id in the scope, give a JSON body sent without a Content-Type the JSON type
    (tritonclient sends none), and read the body under a size limit (413) and a deadline (408). Every
    refusal is logged. An exception that escapes the application becomes a 422 (it was raised by this
    request), never a 500."""

    def __init__(self, app, limit: int, timeout_s: float, authorize, log, storage_ok,
                 encrypted_limit: int | None = None):
        self.app, self.limit, self.timeout_s = app, limit, timeout_s
        self.encrypted_limit = encrypted_limit   # /encrypted-infer carries ciphertexts: a limit of its own
        self.authorize, self.log, self.storage_ok = authorize, log, storage_ok

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracked(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)
        try:
            return await self._gate(scope, receive, tracked)
        except Exception:   # noqa: BLE001 - a request no check foresaw is still the request's fault, never a 500
            if started:
                raise
            logger.exception("request refused: an unexpected failure in the gate")
            self.log.write(key="-", rows=0, status=400, reason="malformed request", path=str(scope.get("path")))
            return await _error(400, "malformed request")(scope, receive, send)

    async def _gate(self, scope, receive, send):
        model_route = scope["path"].startswith("/v2/models/")
        if (model_route or scope["path"] == "/v2/health/ready") and not self.storage_ok():
            # every model request alike, watermarked or not: which ones write the registry must not show
            message = ("the server cannot write its query log or watermark registry (disk full or folder "
                       "removed); try again later")
            self.log.write(key="-", rows=0, status=503, reason=message, path=scope["path"])
            body = {"error": message, **({"ready": False} if not model_route else {})}
            return await JSONResponse(body, status_code=503, headers={"Retry-After": str(STORAGE_RETRY_S)})(
                scope, receive, send)
        headers = dict(scope["headers"])
        refusal, kid = None, "anonymous"
        if b"inference-header-content-length" in headers:
            refusal = ClientError(415, "binary tensor data is not supported: send the tensors as JSON (tritonclient: "
                                       "binary_data=False on inputs and outputs)")
        size = headers.get(b"content-length")
        limit = self.encrypted_limit if self.encrypted_limit and ENCRYPTED_ROUTE.fullmatch(scope["path"]) \
            else self.limit
        digits = size.lstrip(b"0") if size is not None else b""   # int() of 4,301 digits raises: never convert them
        if refusal is None and size is not None and (not size.isdigit() or len(digits) > 18 or int(digits or b"0") > limit):
            refusal = ClientError(413, f"body of {size.decode(errors='replace')} bytes exceeds the limit of "
                                       f"{limit}")
        auths = [v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"]
        if refusal is None and model_route and not READY_ROUTE.fullmatch(scope["path"]):
            try:
                kid = self.authorize(auths)
            except ClientError as e:
                refusal, kid = e, ("anonymous" if not auths else "invalid")
        scope = {**scope, KID: kid}
        if refusal is not None:
            self.log.write(key=kid, rows=0, status=refusal.status, reason=refusal.message, path=scope["path"])
            return await _error(refusal.status, refusal.message, refusal.headers)(scope, receive, send)
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self._run(scope, receive, send)
        if b"content-type" not in headers:
            scope = {**scope, "headers": [*scope["headers"], (b"content-type", b"application/json")]}
        # the body is read here, whole, under the size limit and the deadline, then handed to the app: an
        # error raised while the app reads it would reach the client as FastAPI's generic 400
        chunks, seen, more = [], 0, True
        deadline = time.monotonic() + self.timeout_s
        while more:
            try:
                message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0.001))
            except asyncio.TimeoutError:
                refusal = ClientError(408, f"the request body took longer than {self.timeout_s:g} s to arrive")
                break
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > limit:
                refusal = ClientError(413, f"body exceeds the limit of {limit} bytes")
                break
            more = message.get("more_body", False)
        if refusal is not None:
            self.log.write(key=kid, rows=0, status=refusal.status, reason=refusal.message, path=scope["path"])
            return await _error(refusal.status, refusal.message)(scope, receive, send)
        body, delivered = b"".join(chunks), False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self._run(scope, replay, send)

    async def _run(self, scope, receive, send):
        started = False

        async def watched(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            return await self.app(scope, receive, watched)
        except Exception as e:   # noqa: BLE001 - the catch-all: no exception reaches the client as a 500
            logger.exception("%s %s raised", scope["method"], scope["path"])
            if started:
                raise
            message = f"this request could not be answered ({type(e).__name__})"
            self.log.write(key=scope.get(KID, "anonymous"), rows=0, status=422, reason=message, path=scope["path"])
            return await _error(422, message)(scope, receive, send)


class ErrorBody(BaseModel):
    error: str


ERRORS = {400: "the body is not valid JSON, or more than one Authorization header", 401: "missing API key",
          403: "API key not accepted, or the key is blocked", 404: "no such model or version",
          405: "method not allowed", 408: "the body arrived too slowly", 413: "body or batch too large",
          415: "binary tensor data (send JSON)",
          422: "the request does not match the model's input, or the model cannot answer it",
          429: "rate limit or query budget reached",
          503: "the query log or watermark registry cannot be written (disk full, folder removed): every model "
               "request, until it can (Retry-After)"}


def _responses(*codes: int) -> dict:
    return {c: {"model": ErrorBody, "description": ERRORS[c]} for c in codes}


def build_app(target: Target, space: InputSpace, name: str, guards: GuardConfig,
              clean: torch.Tensor | None = None) -> FastAPI:
    """The OIP v2 application. `clean`: clean inputs of the model's task, which --strip superimposes and
    calibrates its threshold on."""
    app = FastAPI(title=f"mlwarden serve: {name}", version=__version__,
                  description="Open Inference Protocol v2 (REST) with mlwarden guards. Every error is "
                              "{\"error\": \"...\"}; tensors travel as JSON.")
    limits, log = Limits(guards), QueryLog(guards.query_log)
    salt = guards.key_salt if guards.key_salt is not None else secrets.token_hex(16)
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
        if not math.isfinite(space.width):
            raise UserError("--smoothing needs the input range (--data or --input-range): sigma is a fraction of it")
        base = target.module
        sigma = guards.smoothing_sigma * space.width

    strip = _strip(target, space, guards, clean) if guards.strip else None

    # key ids come from the configured keys, never from what a client sends: a refused key is "invalid" in the
    # log and creates no state (limits and detector see accepted keys only)
    accepted = [(k.encode(), key_id(k, salt)) for k in guards.api_keys]

    def authorize(headers: list[str]) -> str:
        """The id of the accepted key ('anonymous' when the server has no keys); 400/401/403 otherwise, before
        any body is read. One identity a request: two Authorization headers are refused, whatever they hold."""
        if len(headers) > 1:
            raise ClientError(400, f"{len(headers)} Authorization headers; send one")
        if not guards.api_keys:
            return "anonymous"
        header = headers[0] if headers else ""
        if not header.lower().startswith("bearer "):
            raise ClientError(401, "missing API key: send 'Authorization: Bearer <key>'", {"WWW-Authenticate": "Bearer"})
        given, found = header[7:].strip().encode("latin-1"), None
        for k, kid in accepted:   # every key compared, in constant time
            if hmac.compare_digest(given, k):
                found = kid
        if found is None:
            raise ClientError(403, "API key not accepted")
        return found

    def kid_of(request: Request) -> str:
        return request.scope.get(KID, "anonymous")

    journals = [j for j in (log.journal, marker.registry if marker is not None else None) if j is not None]

    def storage_ok() -> bool:
        return all([j.healthy() for j in journals])   # a list: every journal gets its chance to recover

    app.state.journals = journals

    app.add_middleware(Gate, limit=guards.max_body_bytes, timeout_s=guards.body_timeout_s, authorize=authorize,
                       log=log, storage_ok=storage_ok,
                       encrypted_limit=guards.encrypted_max_body_bytes if guards.encrypted else None)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        e = exc.errors()[0]
        loc = ".".join(str(p) for p in e["loc"] if p != "body") or "body"
        msg = "body is not valid JSON" if e["type"] == "json_invalid" else e["msg"]
        status = 400 if e["type"] == "json_invalid" else 422
        log.write(key=kid_of(request), rows=0, status=status, reason=f"{loc}: {msg}", path=request.url.path)
        return _error(status, f"{loc}: {msg}")

    @app.exception_handler(ClientError)
    async def client_error(request: Request, exc: ClientError):
        if exc.status not in (429,):    # 429s and blocked keys are logged where they are decided
            log.write(key=kid_of(request), rows=0, status=exc.status, reason=exc.message, path=request.url.path)
        return _error(exc.status, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        what = {404: f"no such route: {request.method} {request.url.path}",
                405: f"method {request.method} not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
        return _error(exc.status_code, what, getattr(exc, "headers", None))

    def check_name(model_name: str, version: str | None = None) -> None:
        if model_name != name:
            raise ClientError(404, f"model '{model_name}' is not served here (this server serves '{name}')")
        if version is not None and version != "1":
            raise ClientError(404, f"model '{name}' has version 1 only, not '{version}'")

    @app.get("/v2", response_model=ServerMetadata)
    def server_metadata():
        return ServerMetadata(name="mlwarden", version=__version__, extensions=[])

    @app.get("/v2/health/live")
    def live():
        return {"live": True}

    @app.get("/v2/health/ready")
    def ready():
        return {"ready": True}

    def model_metadata() -> ModelMetadata:
        out_name, out_type, _ = shape_output(np.full((1, target.n_classes), 1.0 / target.n_classes), guards)
        out_shape = [-1] if guards.output == "label" else [-1, target.n_classes]
        extra = {}
        if strip is not None:
            extra["strip"] = strip.describe()
        if smoothed:
            out_name, out_type, out_shape = "label", "INT64", [-1]
            extra["smoothing"] = {"sigma": guards.smoothing_sigma, "draws_per_row": guards.smoothing_draws,
                                   "alpha": guards.smoothing_alpha, "abstain_label": ABSTAIN}
        bounded = math.isfinite(space.low) and math.isfinite(space.high)
        return ModelMetadata(name=name, versions=["1"], platform=f"mlwarden/{target.kind}",
                             inputs=[TensorMeta(name="input", datatype="FP32", shape=[-1, *in_shape])],
                             outputs=[TensorMeta(name=out_name, datatype=out_type, shape=out_shape)],
                             parameters={"guards": guards.describe(),
                                         "input_range": [space.low, space.high] if bounded else None,
                                         "n_classes": target.n_classes, **extra})

    @app.get("/v2/models/{model_name}", response_model=ModelMetadata, responses=_responses(400, 401, 403, 404, 503))
    def metadata(model_name: str):
        check_name(model_name)
        return model_metadata()

    @app.get("/v2/models/{model_name}/versions/{version}", response_model=ModelMetadata,
             responses=_responses(400, 401, 403, 404, 503))
    def metadata_version(model_name: str, version: str):
        check_name(model_name, version)
        return model_metadata()

    @app.get("/v2/models/{model_name}/ready", response_model=ModelReady, responses=_responses(404, 503))
    def model_ready(model_name: str):
        check_name(model_name)
        return ModelReady(name=name, ready=True)

    @app.get("/v2/models/{model_name}/versions/{version}/ready", response_model=ModelReady,
             responses=_responses(404, 503))
    def model_ready_version(model_name: str, version: str):
        check_name(model_name, version)
        return ModelReady(name=name, ready=True)

    infer_errors = _responses(400, 401, 403, 404, 408, 413, 415, 422, 429, 503)

    @app.post("/v2/models/{model_name}/infer", response_model=InferResponse, responses=infer_errors)
    async def infer(model_name: str, body: InferRequest, request: Request):
        check_name(model_name)
        return run_infer(body, request)

    @app.post("/v2/models/{model_name}/versions/{version}/infer", response_model=InferResponse,
              responses=infer_errors)
    async def infer_version(model_name: str, version: str, body: InferRequest, request: Request):
        check_name(model_name, version)
        return run_infer(body, request)

    def run_infer(body: InferRequest, request: Request):
        t0 = time.monotonic()
        x = _validate(body, in_shape, space, guards)
        kid = kid_of(request)
        if detector is not None and guards.detector == "block" and detector.flagged(kid):
            log.write(key=kid, rows=len(x), status=403, reason="extraction suspected")
            raise ClientError(403, "this key is blocked: its queries look like a model-extraction attack")
        denied = limits.check(kid, len(x))
        if denied is not None:
            reason, retry = denied
            log.write(key=kid, rows=len(x), status=429, reason=reason)
            headers = {"Retry-After": retry_after_header(retry)} if retry is not None else {}
            raise ClientError(429, reason, headers)
        if strip is not None:   # a trigger keeps its answer under superimposition: refuse the request
            with _model_call():
                rejected, h = strip.reject(torch.from_numpy(x), seed=secrets.randbits(31))
            if bool(rejected.any()):
                rows = torch.nonzero(rejected).flatten().tolist()
                log.write(key=kid, rows=len(x), status=422, reason="STRIP", rejected_rows=rows,
                          input_sha=_digest(x))
                shown = ", ".join(f"{i} ({float(h[i]):.3f} bits)" for i in rows[:5]) + (" ..." if len(rows) > 5 else "")
                raise ClientError(422, f"rejected by the STRIP backdoor guard: the answer to row {shown} barely "
                                       f"changes when clean images are superimposed (entropy below "
                                       f"{strip.threshold:.3f} bits), the mark of a backdoor trigger")
        if smoothed:   # Cohen et al.'s PREDICT: n forward passes a row, -1 when the vote is not significant
            with _model_call():
                labels = predict(base, torch.from_numpy(x), sigma, guards.smoothing_draws, target.n_classes,
                                 guards.smoothing_alpha).numpy().astype(np.int64)
            if detector is not None:
                detector.observe(kid, x, labels)
            ms = round(1e3 * (time.monotonic() - t0), 2)
            log.write(key=kid, rows=len(x), status=200, ms=ms, input_sha=_digest(x),
                      forward_passes=len(x) * guards.smoothing_draws, abstained=int((labels == ABSTAIN).sum()))
            return JSONResponse({"model_name": name, "model_version": "1", "id": body.id,
                                 "parameters": {"forward_passes": len(x) * guards.smoothing_draws, "ms": ms,
                                                **({"strip_forward_passes": len(x) * guards.strip_draws}
                                                   if strip is not None else {})},
                                 "outputs": [{"name": "label", "shape": [len(x)], "datatype": "INT64",
                                              "data": labels.tolist()}]})
        with torch.no_grad(), _model_call():
            probs = target.scores(torch.from_numpy(x)).double().numpy()
        _check_finite(probs)
        if detector is not None:  # alerts go to the operator's log, never to the client
            st = detector.observe(kid, x, probs.argmax(1))
            if st.flagged:
                log.write(key=kid, rows=len(x), status=200, alert="extraction suspected", w=st.w,
                          distances=st.observed)
        if marker is not None:
            probs = marker.apply(x, probs, kid)
        out_name, out_type, values = shape_output(probs, guards)
        _check_requested(body, out_name)
        ms = round(1e3 * (time.monotonic() - t0), 2)
        cost = {"strip_forward_passes": len(x) * guards.strip_draws, "ms": ms} if strip is not None else {}
        log.write(key=kid, rows=len(x), status=200, input_sha=_digest(x), **(cost or {"ms": ms}))
        # built as a plain dict and rendered directly: response_model stays for the OpenAPI schema, but
        # FastAPI's re-validation and jsonable_encoder pass over every number cost more than the model
        return JSONResponse({"model_name": name, "model_version": "1", "id": body.id, "parameters": cost,
                             "outputs": [{"name": out_name, "shape": list(values.shape), "datatype": out_type,
                                          "data": values.reshape(-1).tolist()}]})

    if guards.encrypted:
        _encrypted_route(app, target, name, guards, limits, log, kid_of, check_name, detector)
    return app


class EncryptedRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    context: str = Field(..., description="base64 of the client's public TenSEAL CKKS context (no secret key)")
    inputs: list[str] = Field(..., description="base64 of one CKKS vector per input feature, samples in slots")
    rows: int = Field(..., ge=1, description="samples in each ciphertext")


def _encrypted_route(app, target, name, guards, limits, log, kid_of, check_name, detector) -> None:
    """POST /v2/models/{name}/encrypted-infer (serve/encrypted.py): the CKKS work runs in a worker process with a
    memory limit and a deadline, one request at a time, off the event loop."""
    from starlette.concurrency import run_in_threadpool

    from ..core.extras import require
    from .encrypted import HEWorker, as_lists, he_layers
    from .he_worker import BadCiphertext
    require("tenseal", "he", "serve --encrypted")
    if not isinstance(target, TorchTarget):
        raise UserError(f"--encrypted computes a PyTorch network on ciphertexts; {target.name} is a "
                        f"{type(target).__name__}")
    layers = he_layers(target.module)
    n_features = math.prod(target.input_shape)
    if layers[0][1].shape[1] != n_features:
        raise UserError(f"--encrypted: the first layer takes {layers[0][1].shape[1]} features, the input has "
                        f"{n_features}")
    plain = as_lists(layers)
    worker = HEWorker(guards.encrypted_max_memory_bytes, guards.encrypted_timeout_s)
    app.state.he_worker = worker
    one_at_a_time = asyncio.Semaphore(1)

    @app.on_event("shutdown")
    async def stop_worker():
        worker.close()

    @app.post("/v2/models/{model_name}/encrypted-infer", responses=_responses(400, 401, 403, 404, 413, 422, 429, 503))
    async def encrypted_infer(model_name: str, body: EncryptedRequest, request: Request):
        check_name(model_name)
        t0 = time.monotonic()
        kid = kid_of(request)
        if detector is not None and guards.detector == "block" and detector.flagged(kid):
            log.write(key=kid, rows=body.rows, status=403, reason="extraction suspected", path=request.url.path)
            raise ClientError(403, "this key is blocked: its queries look like a model-extraction attack")
        if body.rows > guards.max_batch:
            raise ClientError(422, f"rows: {body.rows} samples exceed the batch limit of {guards.max_batch}")
        if len(body.inputs) != n_features:
            raise ClientError(422, f"inputs: {len(body.inputs)} ciphertexts; this model takes {n_features} "
                                   "features, one ciphertext each")
        denied = limits.check(kid, body.rows)
        if denied is not None:
            reason, retry = denied
            log.write(key=kid, rows=body.rows, status=429, reason=reason, path=request.url.path)
            raise ClientError(429, reason, {"Retry-After": retry_after_header(retry)} if retry is not None else {})
        async with one_at_a_time:
            try:
                outputs = await run_in_threadpool(worker.run, plain, body.context, body.inputs, n_features, body.rows)
            except BadCiphertext as e:
                raise ClientError(422, str(e)) from None
        ms = round(1e3 * (time.monotonic() - t0), 2)
        log.write(key=kid, rows=body.rows, status=200, ms=ms, path=request.url.path, encrypted=True)
        return JSONResponse({"model_name": name, "model_version": "1", "rows": body.rows, "outputs": outputs,
                             "parameters": {"ms": ms, "layers": len(layers)}})


def _strip(target: Target, space: InputSpace, guards: GuardConfig, clean: torch.Tensor | None):
    from ..scans.strip import Strip
    if not isinstance(target, TorchTarget):
        raise UserError(f"--strip superimposes images through a PyTorch network; {target.name} is a "
                        f"{type(target).__name__}")
    if clean is None or len(clean) < 40:
        raise UserError("--strip needs clean images of the model's task to superimpose and calibrate on (--data "
                        "with at least 40 training images)")
    if len(target.input_shape) != 3 or not (math.isfinite(space.low) and math.isfinite(space.high)):
        raise UserError("--strip guards image models (inputs C,H,W) with a known input range (--data or "
                        "--input-range)")
    # the network as TorchTarget holds it, already in inference mode: a torch.export module (.pt2) refuses eval()
    try:
        return Strip.calibrate(target.module, clean, draws=guards.strip_draws, frr=guards.strip_frr,
                               low=space.low, high=space.high)
    except Exception as e:   # noqa: BLE001 - e.g. an export whose batch size is fixed
        msg = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise UserError(f"--strip: {target.name} cannot compute batches of superimposed images ({msg})") from None


@contextlib.contextmanager
def _model_call():
    """A model that raises on a request's inputs answers a 422: the inputs are what it could not compute."""
    try:
        yield
    except ClientError:
        raise
    except Exception as e:   # noqa: BLE001 - whatever the model's library raises
        logger.warning("the model raised on a request: %s: %s", type(e).__name__, e)
        raise ClientError(422, f"inputs.0.data: the model could not compute an answer for these inputs "
                               f"({type(e).__name__})") from None


def _check_finite(probs: np.ndarray) -> None:
    """Scores of NaN or infinity (a finite float32 input such as 3.4e38 overflows a layer) are no answer: 422."""
    if probs.ndim != 2:
        raise ClientError(422, f"inputs.0.data: the model answered scores of shape {list(probs.shape)}, not "
                               "(rows, classes)")
    bad = np.flatnonzero(~np.isfinite(probs).all(1))
    if len(bad):
        shown = ", ".join(map(str, bad[:5].tolist())) + (" ..." if len(bad) > 5 else "")
        raise ClientError(422, f"inputs.0.data: the model's scores for row {shown} are not finite (NaN or "
                               "infinity): the values are beyond what it computes; the server's --input-range "
                               "would refuse them up front")


def _check_requested(body: InferRequest, out_name: str) -> None:
    """A request may name the outputs it wants (tritonclient does): only this server's one output exists, and
    binary output data is refused like binary input."""
    for i, o in enumerate(body.outputs or []):
        want = o.get("name") if isinstance(o, dict) else None
        if want != out_name:
            raise ClientError(422, f"outputs.{i}.name: this server answers one output, '{out_name}', not {want!r}")
        params = o.get("parameters") or {}
        if isinstance(params, dict) and params.get("binary_data"):
            raise ClientError(415, f"outputs.{i}: binary tensor data is not supported (binary_data=False)")


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
    except OverflowError:   # an integer such as 10**400 has no float64
        raise ClientError(422, f"{field}.data: a number is too large for a float") from None
    if arr.size != int(np.prod(shape)):
        raise ClientError(422, f"{field}.data: {arr.size} values do not fill shape {shape}")
    if not np.isfinite(arr).all():
        raise ClientError(422, f"{field}.data: contains NaN or infinite values")
    lo, hi = space.low - RANGE_TOLERANCE, space.high + RANGE_TOLERANCE
    if np.abs(arr).max() > np.finfo(np.float32).max:
        raise ClientError(422, f"{field}.data: a value is out of the float32 range")
    if arr.min() < lo or arr.max() > hi:
        raise ClientError(422, f"{field}.data: values must lie in [{space.low:g}, {space.high:g}]")
    return arr.astype(np.float32).reshape(shape[0], *in_shape)
