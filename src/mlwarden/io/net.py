"""HTTP with a deadline for the whole exchange, not only for each read.

httpx's timeouts apply to each socket operation: a server that sends one byte every 25 seconds never
trips a 30-second read timeout and holds an audit forever. Every request mlwarden makes (a baseline URL,
an audited endpoint, an encrypted endpoint) goes through `exchange`, which gives the whole exchange
(connecting, sending, the status line and headers, the body) one deadline, `$MLWARDEN_HTTP_DEADLINE`
seconds (default 300): each socket operation may wait only for the time left, and an answer larger
than its limit is refused as it arrives. Past the deadline the request ends with a one-line error."""
from __future__ import annotations

import contextvars
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

from ..core.errors import UserError

DEADLINE_ENV = "MLWARDEN_HTTP_DEADLINE"
DEFAULT_DEADLINE_S = 300.0
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("mlwarden_http_deadline", default=None)


def deadline_s(default: float = DEFAULT_DEADLINE_S) -> float:
    """Seconds one HTTP exchange may take in all: $MLWARDEN_HTTP_DEADLINE, else `default` (300)."""
    text = os.environ.get(DEADLINE_ENV, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise UserError(f"${DEADLINE_ENV} '{text}' must be a positive number of seconds")
    return value


def _left(timeout: float | None) -> float | None:
    """The time a socket operation may take: its own timeout, cut to what is left before the deadline."""
    import httpcore
    deadline = _DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise httpcore.ReadTimeout("the deadline of the whole exchange has passed")
    return left if timeout is None else min(timeout, left)


def _backend(inner):
    """httpcore's network backend with every operation cut to the exchange's deadline."""
    import httpcore

    class Stream(httpcore.NetworkStream):
        def __init__(self, s):
            self.s = s

        def read(self, max_bytes, timeout=None):
            return self.s.read(max_bytes, _left(timeout))

        def write(self, buffer, timeout=None):
            return self.s.write(buffer, _left(timeout))

        def close(self):
            return self.s.close()

        def start_tls(self, ssl_context, server_hostname=None, timeout=None):
            return Stream(self.s.start_tls(ssl_context, server_hostname, _left(timeout)))

        def get_extra_info(self, info):
            return self.s.get_extra_info(info)

    class Backend(httpcore.NetworkBackend):
        def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
            return Stream(inner.connect_tcp(host, port, _left(timeout), local_address, socket_options))

        def connect_unix_socket(self, path, timeout=None, socket_options=None):
            return Stream(inner.connect_unix_socket(path, _left(timeout), socket_options))

        def sleep(self, seconds):
            return inner.sleep(seconds)

    return Backend()


def client(**kwargs):
    """An httpx.Client (same arguments) whose connections keep `exchange`'s deadline."""
    import httpx
    transport = httpx.HTTPTransport(limits=kwargs.pop("limits", httpx.Limits()))
    pool = getattr(transport, "_pool", None)   # httpcore's connection pool: its backend opens the sockets
    if pool is not None and hasattr(pool, "_network_backend"):
        pool._network_backend = _backend(pool._network_backend)
    return httpx.Client(transport=transport, **kwargs)


@dataclass
class Answer:
    status: int
    headers: Mapping[str, str]   # httpx.Headers: names are case-insensitive
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


def exchange(http, method: str, url: str, *, what: str, limit: int, seconds: float | None = None,
             **kwargs) -> Answer:
    """One request through `http` (a `client()`), read whole within `seconds` (default: deadline_s()) and
    at most `limit` bytes (after decompression). Past either, a one-line UserError naming `what`; httpx's
    own errors (a refused connection, a read timeout) pass through for the caller to retry or report."""
    import httpx
    seconds = deadline_s() if seconds is None else seconds
    deadline = time.monotonic() + seconds
    token = _DEADLINE.set(deadline)
    late = UserError(f"{what}: no complete answer within {seconds:g} s (${DEADLINE_ENV} sets how long to wait)")
    try:
        with http.stream(method, url, **kwargs) as r:
            declared = r.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise UserError(f"{what}: the answer is {int(declared)} bytes, more than the {limit >> 20} MiB "
                                "allowed")
            body, size = [], 0
            for chunk in r.iter_bytes():
                size += len(chunk)
                if size > limit:
                    raise UserError(f"{what}: the answer is more than the {limit >> 20} MiB allowed")
                if time.monotonic() > deadline:
                    raise late
                body.append(chunk)
            return Answer(r.status_code, r.headers, b"".join(body))
    except httpx.TimeoutException:
        if time.monotonic() >= deadline - 0.01:
            raise late from None
        raise
    finally:
        _DEADLINE.reset(token)
