"""Serving guards: what the answer reveals (output mode), who may ask (API keys), how fast and how much
(per-key rate limit and query budget), and a JSONL log of every query."""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..core.errors import UserError

log = logging.getLogger("mlwarden.serve")


class GuardConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    output: Literal["probabilities", "top-k", "rounded", "label"] = "probabilities"
    top_k: int = Field(1, ge=1)
    decimals: int = Field(2, ge=0, le=8)
    api_keys: list[str] = []            # empty: no authentication
    rate_per_s: float | None = Field(None, gt=0, description="requests per second per key")
    burst: int = Field(20, ge=1)
    budget: int | None = Field(None, ge=1, description="rows (queries) per key, in total")
    max_batch: int = Field(1024, ge=1)
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    query_log: str | None = None
    detector: Literal["off", "alert", "block"] = "off"
    detector_delta: float = Field(0.96, gt=0, lt=1, description="Shapiro-Wilk W below this flags a client")
    detector_min_queries: int = Field(100, ge=20)
    watermark_key: str | None = None     # secret for the DAWN-style watermark; None: off
    watermark_rate: float = Field(0.005, gt=0, lt=0.5)
    watermark_registry: str | None = None  # JSONL of watermarked queries, for `mlwarden watermark verify`
    smoothing_sigma: float | None = Field(None, gt=0, description="randomized smoothing noise (fraction of the "
                                          "range); the answer is Cohen et al.'s PREDICT, -1 when it abstains")
    smoothing_draws: int = Field(1000, ge=10, le=100000, description="noise draws (forward passes) per row")
    smoothing_alpha: float = Field(0.001, gt=0, lt=0.5)
    strip: bool = Field(False, description="STRIP backdoor guard: reject inputs whose answer survives the "
                        "superimposition of clean images (Gao et al. 2019)")
    strip_draws: int = Field(20, ge=2, le=1000, description="STRIP: superimpositions (extra forward passes) per row")
    strip_frr: float = Field(0.01, gt=0, lt=0.5, description="STRIP: share of clean inputs it may reject")
    key_salt: str | None = None          # salt of the key ids in the log; None: random per server start
    body_timeout_s: float = Field(30.0, gt=0, description="seconds a client may take to send a request body")
    header_timeout_s: float = Field(10.0, gt=0, description="seconds a connection may take to send a request's "
                                    "headers (from its opening or the end of the previous answer)")
    encrypted: bool = Field(False, description="answer CKKS-encrypted queries at /encrypted-infer (linear layers "
                            "and square activations; exact scores, so only rate limits and budgets apply)")
    encrypted_max_body_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="body limit of /encrypted-infer")
    encrypted_max_memory_bytes: int = Field(4 * 1024 ** 3, ge=256 * 1024 ** 2, description="memory limit of the "
                                            "worker process that deserializes and computes encrypted requests")
    encrypted_timeout_s: float = Field(120.0, gt=0, description="deadline of one encrypted request's computation")

    def describe(self) -> dict:
        d = self.model_dump(exclude={"api_keys", "query_log", "watermark_key", "watermark_registry", "key_salt"})
        d["watermark"] = bool(self.watermark_key)
        d["auth"] = "bearer API key" if self.api_keys else "none"
        d["query_log"] = bool(self.query_log)
        return d


def shape_output(probs: np.ndarray, g: GuardConfig) -> tuple[str, str, np.ndarray]:
    """(output name, OIP datatype, values) under the configured output mode."""
    if g.output == "label":
        return "label", "INT64", probs.argmax(1).astype(np.int64)
    if g.output == "rounded":
        return "probabilities", "FP32", np.round(probs, g.decimals).astype(np.float32)
    if g.output == "top-k":
        k = min(g.top_k, probs.shape[1])
        out = np.zeros_like(probs, dtype=np.float32)
        idx = np.argsort(-probs, axis=1)[:, :k]
        np.put_along_axis(out, idx, np.take_along_axis(probs, idx, 1), 1)
        return "probabilities", "FP32", out
    return "probabilities", "FP32", probs.astype(np.float32)


def key_id(key: str | None, salt: str = "") -> str:
    """What the log and the per-key limits call a key: a salted hash, so a leaked log cannot be used to test
    guesses of short keys offline (the salt is random per server start unless the operator fixes it)."""
    if key is None:
        return "anonymous"
    return hashlib.sha256(f"{salt}\x00{key}".encode()).hexdigest()[:12]


class Limits:
    """Token bucket per key (rate) and a total row count per key (budget). Thread-safe."""

    def __init__(self, g: GuardConfig):
        self.g = g
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[float, float]] = {}
        self.used: dict[str, int] = {}

    def check(self, key: str, rows: int) -> tuple[str, float | None] | None:
        """None when allowed; else (reason, retry_after_s or None when waiting will not help)."""
        with self._lock:
            used = self.used.get(key, 0)
            if self.g.budget is not None and used + rows > self.g.budget:
                return (f"query budget of {self.g.budget} rows for this key is exhausted ({used} used)", None)
            if self.g.rate_per_s is not None:
                now = time.monotonic()
                tokens, last = self._tokens.get(key, (float(self.g.burst), now))
                tokens = min(self.g.burst, tokens + (now - last) * self.g.rate_per_s)
                if tokens < 1:
                    self._tokens[key] = (tokens, now)
                    return ("rate limit exceeded", (1 - tokens) / self.g.rate_per_s)
                self._tokens[key] = (tokens - 1, now)
            self.used[key] = used + rows
            return None


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))


class Journal:
    """An append-only JSONL file, held open, every line flushed as it is written. A write never raises: when
    the disk fails (full, or the folder removed: a held file that lost its last link) the line is kept in
    memory (at most MAX_PENDING lines; later ones are counted as lost) and the journal is failed until
    `healthy()` manages to reopen the path and write what is pending; it tries at most once per
    `RETRY_S`. The server answers 503 to every model request while a journal is failed (app.py)."""

    MAX_PENDING = 10_000
    RETRY_S = 1.0

    def __init__(self, path: str, flag: str):
        self.path, self.flag = Path(path), flag
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self.lost = 0
        self.failed_since: float | None = None
        self._tried = 0.0
        try:
            self._f = self._open()
        except OSError as e:
            raise UserError(f"{flag} {path}: cannot append to it ({e.strerror})") from None

    def _open(self):
        return self.path.open("a", encoding="utf-8", buffering=1)

    def append(self, record: dict) -> None:
        line = json.dumps(record, default=str)
        with self._lock:
            if self.failed_since is None:
                try:
                    self._f.write(line + "\n")
                    return
                except (OSError, ValueError) as e:
                    self._fail(e)
            if len(self._pending) < self.MAX_PENDING:
                self._pending.append(line)
            else:
                self.lost += 1

    def _fail(self, e: Exception) -> None:
        self.failed_since = self._tried = time.monotonic()
        log.warning("%s %s: cannot write (%s); model requests get 503 until it can",
                    self.flag, self.path, getattr(e, "strerror", None) or e)
        try:
            self._f.close()
        except (OSError, ValueError):   # the close flushes what the failed write left in the buffer
            pass

    def healthy(self) -> bool:
        """Whether lines reach the file. Costs one fstat while healthy (a removed file, or a file in a removed
        folder, has no link left: its lines would go nowhere)."""
        with self._lock:
            if self.failed_since is None:
                try:
                    if os.fstat(self._f.fileno()).st_nlink > 0:
                        return True
                    self._fail(OSError(errno.ENOENT, f"{self.path} was removed"))
                except (OSError, ValueError) as e:
                    self._fail(e)
            now = time.monotonic()
            if now - self._tried < self.RETRY_S:
                return False
            self._tried = now
            try:   # the folder is never created: what the operator removed stays removed
                f = self._open()
            except OSError:
                return False
            try:
                for line in self._pending:
                    f.write(line + "\n")
                f.flush()
            except OSError:
                try:
                    f.close()
                except OSError:
                    pass
                return False
            self._f, self._pending, self.failed_since = f, [], None
            if self.lost:
                log.warning("%s %s: writable again; %d lines were lost", self.flag, self.path, self.lost)
                self.lost = 0
            return True


class QueryLog:
    """The query log (`--query-log`): one JSON line per request; without a path it writes nothing."""

    def __init__(self, path: str | None):
        self.journal = Journal(path, "--query-log") if path else None

    def write(self, **record) -> None:
        if self.journal is not None:
            self.journal.append({"time": round(time.time(), 3), **record})
