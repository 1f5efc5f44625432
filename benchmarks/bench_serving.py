"""Serving cost of the guards: throughput and p50/p99 latency under a loopback load test (bounded: N
requests of one digit each from 4 client threads, at most 120 s a round, 5 alternating rounds), against a bare FastAPI endpoint
serving the same MLP. Both servers run as separate processes with one torch thread. Guarded = API key,
per-key rate limit and budget (set high enough not to throttle), input validation, rounded output,
JSONL query log, the extraction detector (alert) and the watermark, all at once."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import torch

torch.set_num_threads(1)
from mlwarden.core.recipe import BUILTIN_RECIPES  # noqa: E402
from mlwarden.io.datasets import load_builtin  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
THREADS = 4
ROUNDS = 5


def port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait(url):
    for _ in range(300):
        try:
            httpx.get(url.rsplit("/v2/", 1)[0] + "/docs")
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


def load(url, xs, headers):
    lat, lock = [], threading.Lock()
    per = len(xs) // THREADS
    deadline = time.monotonic() + 120

    def worker(chunk):
        with httpx.Client(headers=headers) as c:
            for x in chunk:
                if time.monotonic() > deadline:
                    return
                body = {"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": x}]}
                t = time.perf_counter()
                r = c.post(url, json=body)
                dt = time.perf_counter() - t
                assert r.status_code == 200, r.text
                with lock:
                    lat.append(dt)

    ts = [threading.Thread(target=worker, args=(xs[i * per:(i + 1) * per],)) for i in range(THREADS)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    lat = np.asarray(lat)
    return len(lat) / wall, 1e3 * np.percentile(lat, 50), 1e3 * np.percentile(lat, 99), len(lat)


def main():
    data = load_builtin("digits", seed=0)
    model = BUILTIN_RECIPES["mlp"].fit(data.x_train, data.y_train, 10, seed=0)
    tmp = Path(tempfile.mkdtemp())
    torch.save(model.state_dict(), tmp / "mlp.pt")
    rng = np.random.default_rng(0)
    xs = [data.x_test[i].reshape(-1).tolist() for i in rng.integers(0, len(data.x_test), N)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    here = Path(__file__).parent
    p1 = port()
    bare = subprocess.Popen([sys.executable, str(here / "bare_server.py"), str(tmp / "mlp.pt"), str(p1)], env=env)
    p2 = port()
    guarded = subprocess.Popen([sys.executable, "-m", "mlwarden", "serve", str(tmp / "mlp.pt"), "--factory",
                                "mlwarden.core.zoo:mlp", "--data", "digits", "--port", str(p2), "--api-key", "k",
                                "--rate", "100000", "--burst", "100000", "--budget", "100000000", "--output",
                                "rounded", "--query-log", str(tmp / "q.jsonl"), "--detector", "alert",
                                "--watermark-key", "secret", "--watermark-registry", str(tmp / "wm.jsonl")], env=env)
    servers = (("bare FastAPI", f"http://127.0.0.1:{p1}/v2/models/model/infer", {}),
               ("mlwarden serve, all guards", f"http://127.0.0.1:{p2}/v2/models/model/infer",
                {"Authorization": "Bearer k"}))
    try:
        for _, url, headers in servers:
            wait(url)
            load(url, xs[:200], headers)  # warm-up
        # the two servers alternate, ROUNDS times: this 2-core box's run-to-run noise is larger than the
        # difference measured, so the medians are reported
        runs = {label: [] for label, _, _ in servers}
        for _ in range(ROUNDS):
            for label, url, headers in servers:
                runs[label].append(load(url, xs, headers))
        rows = {label: tuple(np.median(np.asarray(r), axis=0)) for label, r in runs.items()}
    finally:
        bare.terminate()
        guarded.terminate()
    print(f"{N} requests of 1 digit each, {THREADS} client threads, loopback, one torch thread per server; "
          f"median of {ROUNDS} alternating rounds")
    print(f"{'server':<28} | {'req/s':>7} | {'p50 ms':>7} | {'p99 ms':>7} | per-round req/s")
    for label, (rps, p50, p99, n) in rows.items():
        print(f"{label:<28} | {rps:7.1f} | {p50:7.2f} | {p99:7.2f} | "
              + ", ".join(f"{r[0]:.0f}" for r in runs[label]))
    b, g = rows["bare FastAPI"][0], rows["mlwarden serve, all guards"][0]
    print(f"throughput cost of all guards: {100 * (1 - g / b):.1f}% (goal: at most 25%)")


if __name__ == "__main__":
    main()
