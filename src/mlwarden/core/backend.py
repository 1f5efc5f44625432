"""Backends run independent work items: reference models, the points of a sweep, federated clients.

`map(fn, items, *, shared=None)` calls `fn(item, shared)` for every item and returns the results in
order. `fn` must be a pure function: whatever it changes outside its result is lost on a worker, and the
caller, not the worker, writes results to the cache. `shared` (the data, the recipe) is sent to each
worker once, not with every item.

- LocalBackend: this process, in order (the default).
- ProcessBackend: a pool of `workers` processes (forked from a clean server process with torch already
  imported), one torch thread each, kept until close(); `fn` and `shared` travel by cloudpickle, so
  closures and recipes with hooks travel too.
- RayBackend: a local Ray (`--backend ray`) or a cluster (`--backend ray://HOST:PORT`); `shared` is put
  in Ray's object store once. Needs the extra `[ray]`, imported only when chosen.

Targets that hold what cannot be pickled travel as their description and rebuild it in the worker (an
HTTP target opens its own client, an ONNX target its own session from the model's bytes). A work item that
still cannot travel (a lock, a user's open file) runs here, in order, and the backend counts it in
`ran_locally`: the numbers are the same, only the speed-up is lost. At a fixed
thread count and device, every backend gives the same results for the same seed (tests/core)."""
from __future__ import annotations

import os
import pickle
from typing import Any, Callable

from .errors import UserError


class LocalBackend:
    """Runs independent work items in this process, in order."""

    name = "local"
    workers = 1

    def __init__(self):
        self.ran_locally = 0

    def map(self, fn: Callable[[Any, Any], Any], items: list, *, shared: Any = None) -> list:
        return [fn(i, shared) for i in items]

    def describe(self) -> dict:
        return {"backend": self.name, "workers": self.workers}

    def close(self) -> None:
        pass


def rounds(backend, fn: Callable[[Any, Any], Any], items: list, shared: Any = None,
           check: Callable[[], None] | None = None):
    """backend.map in rounds of as many items as the backend has workers, yielding (items, results) after
    each: the time budget is checked before every round (an over-budget sweep stops between rounds) and
    the caller can keep what a round produced (cache it, write it) before the next starts."""
    items = list(items)
    step = max(int(backend.workers), 1)
    for start in range(0, len(items), step):
        if check is not None:
            check()
        chunk = items[start:start + step]
        yield chunk, backend.map(fn, chunk, shared=shared)


def map_checked(backend, fn: Callable[[Any, Any], Any], items: list, shared: Any = None,
                check: Callable[[], None] | None = None) -> list:
    """backend.map with the time budget checked between rounds (see `rounds`)."""
    return [r for _, results in rounds(backend, fn, items, shared, check) for r in results]


def _travels(obj) -> bytes | None:
    import cloudpickle
    try:
        return cloudpickle.dumps(obj)
    except Exception:  # noqa: BLE001 - whatever cannot be pickled runs here instead, and is counted
        return None


_WORK: tuple[str, tuple] | None = None   # (key, (fn, shared)) inside a worker process: the last work it loaded


def _context():
    """Workers fork from a server process started once per session with torch and mlwarden imported, so a
    pool starts in a fraction of a second; never from this process, whose thread pools a fork would copy
    half-locked. Where forkserver is missing (not Linux), fresh processes (spawn)."""
    import multiprocessing
    try:
        ctx = multiprocessing.get_context("forkserver")
    except ValueError:
        return multiprocessing.get_context("spawn")
    ctx.set_forkserver_preload(["torch", "mlwarden.core.recipe", "mlwarden.core.backend"])
    return ctx


def _init_worker(threads: int) -> None:
    import warnings

    import torch
    torch.set_num_threads(threads)
    # A worker's first backward pass on a GPU sets the CUDA context itself, and says so on every run
    warnings.filterwarnings("ignore", message="Attempting to run cuBLAS, but there was no current CUDA context")


def _call(task):
    """One item in a worker: the work (fn, shared) is read from its file once per worker and map call."""
    global _WORK
    path, key, item = task
    if _WORK is None or _WORK[0] != key:
        with open(path, "rb") as f:
            _WORK = (key, pickle.loads(f.read()))
    fn, shared = _WORK[1]
    import cloudpickle
    return cloudpickle.dumps(fn(pickle.loads(item), shared))   # items and results travel as the work: closures too


class ProcessBackend(LocalBackend):
    """A pool of `workers` processes, `threads` torch threads each (default 1), kept between map calls
    until close(). Each call writes (fn, shared) to one temporary file that every worker reads once."""

    name = "process"

    def __init__(self, workers: int, threads: int = 1):
        super().__init__()
        if workers < 1:
            raise UserError(f"--workers must be at least 1 (got {workers})")
        self.workers, self.threads = workers, threads
        self._pool = None

    def map(self, fn, items, *, shared=None):
        items = list(items)
        if self.workers == 1 or len(items) < 2:
            return super().map(fn, items, shared=shared)
        payload, sent = _travels((fn, shared)), [_travels(i) for i in items]
        if payload is None or None in sent:
            self.ran_locally += len(items)
            return super().map(fn, items, shared=shared)
        import hashlib
        import tempfile
        from concurrent.futures import ProcessPoolExecutor
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=_context(), initializer=_init_worker,
                                             initargs=(self.threads,))
        key = hashlib.sha256(payload).hexdigest()
        with tempfile.TemporaryDirectory(prefix="mlwarden-work-") as folder:
            path = os.path.join(folder, "work.pkl")
            with open(path, "wb") as f:
                f.write(payload)
            return [pickle.loads(r) for r in self._pool.map(_call, [(path, key, i) for i in sent])]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __reduce__(self):   # inside a worker (a closure that captured a context), work runs where it is
        return (LocalBackend, ())


# Ray's switches that leave CUDA_VISIBLE_DEVICES alone in a task that asks for no GPU: the first since Ray 2.49,
# the second (all tasks) since Ray 1.x; every task of ours asks for none.
SEE_GPUS = {"RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0", "RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES": "1"}


def _ray_call(payload: bytes, item, threads: int):
    import torch
    torch.set_num_threads(threads)
    fn, shared = pickle.loads(payload)
    return fn(item, shared)


class RayBackend(LocalBackend):
    """Work items as Ray tasks, one CPU and `threads` torch threads each. `address`: None starts a local Ray
    on this machine's cores; "ray://HOST:PORT" joins a running cluster."""

    name = "ray"

    def __init__(self, address: str | None = None, threads: int = 1, workers: int | None = None):
        super().__init__()
        self.ray = require_backend("ray")
        self.address, self.threads = address, threads
        if not self.ray.is_initialized():
            kwargs = {"num_cpus": workers} if address is None and workers else {}
            if address is not None:
                _reachable(address)
            # Ray hides every GPU from a task that asks for none (CUDA_VISIBLE_DEVICES=""), so a worker of
            # `--device cuda` found no GPU: its tasks see the node's GPUs, as the process pool's workers do.
            try:
                self.ray.init(address=address, ignore_reinit_error=True, include_dashboard=False,
                              log_to_driver=False, runtime_env={"env_vars": SEE_GPUS}, **kwargs)
            except ConnectionError as e:   # the Ray client's own timeout, after the port answered
                raise UserError(f"--backend {address}: cannot join the Ray cluster ({e})") from None
        self.workers = int(self.ray.cluster_resources().get("CPU", 1))
        self._remote = self.ray.remote(num_cpus=1)(_ray_call)

    def map(self, fn, items, *, shared=None):
        items = list(items)
        payload = _travels((fn, shared))
        if payload is None or None in (_travels(i) for i in items):
            self.ran_locally += len(items)
            return super().map(fn, items, shared=shared)
        ref = self.ray.put(payload)
        return self.ray.get([self._remote.remote(ref, i, self.threads) for i in items])

    def describe(self) -> dict:
        return {"backend": self.name, "workers": self.workers, "address": self.address or "local"}

    def close(self) -> None:
        if self.address is None:
            self.ray.shutdown()

    def __reduce__(self):
        return (LocalBackend, ())


def _reachable(address: str, timeout_s: float = 10.0) -> None:
    """A one-line error, in seconds rather than the Ray client's half minute of retries, when nothing listens at
    a ray://HOST:PORT address."""
    import socket
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except (OSError, ValueError) as e:
        why = getattr(e, "strerror", None) or str(e) or type(e).__name__
        raise UserError(f"--backend {address}: no Ray cluster answers there ({why}); start one with `ray start "
                        "--head`, or use --backend ray for a Ray on this machine") from None


def require_backend(spec: str):
    """The optional package a --backend needs (Ray), checked before any model loads or trains: a missing one
    is the first line the user reads. Returns the module, or None when the backend needs none."""
    if (spec or "").startswith("ray"):
        from .extras import require
        return require("ray", "ray", "the Ray backend")
    return None


def make_backend(spec: str = "local", workers: int | None = None, threads: int = 1) -> LocalBackend:
    """`--backend local|process|ray|ray://HOST:PORT` with `--workers N` (process: default the CPU count);
    each worker computes with `threads` torch threads, as the calling process does (`--threads`)."""
    spec = (spec or "local").strip()
    if spec == "local":
        if workers and workers > 1:
            return ProcessBackend(workers, threads)
        return LocalBackend()
    if spec == "process":
        return ProcessBackend(workers or os.cpu_count() or 1, threads)
    if spec == "ray":
        return RayBackend(None, threads=threads, workers=workers)
    if spec.startswith("ray://"):
        return RayBackend(spec, threads=threads)
    raise UserError(f"--backend {spec!r}: expected local, process, ray or ray://HOST:PORT")
