import contextlib
import os
import shutil
import subprocess
import sys
import time


def mlwarden(*args, cwd=None, timeout=600, env_cache=None):
    env = dict(os.environ, COLUMNS="200", OMP_NUM_THREADS="1")
    if env_cache is not None:   # a cache of its own (reference models trained afresh)
        env["MLWARDEN_CACHE"] = str(env_cache)
    return subprocess.run([sys.executable, "-m", "mlwarden", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


def infer_body(x) -> dict:
    return {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.flatten().tolist()}]}


@contextlib.contextmanager
def served(model, *extra, data="digits", env=None):
    """`mlwarden serve MODEL --data digits` (or other --data; None: no --data) in a subprocess on a free port,
    until the block ends."""
    import httpx

    from .test_serve_cli import free_port
    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "mlwarden", "serve", str(model),
                          *(["--data", data] if data else []), "--port", str(port), *extra], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=dict(os.environ, OMP_NUM_THREADS="1", **(env or {})))
    try:
        deadline = time.monotonic() + 60
        while True:
            assert p.poll() is None, p.stderr.read()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        p.terminate()
        p.wait(10)


def screenshot(html, png, size="1100,900"):
    """The page as headless Chromium renders it, as an RGB array of 0-255 ints (skips where Chromium is
    missing, except in CI, which must install it)."""
    import pytest
    from matplotlib.image import imread
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        assert not os.environ.get("CI"), "CI must install chromium (.ci/run does)"
        pytest.skip("headless Chromium is not installed here")
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={png}",
                    f"--window-size={size}", html.as_uri()], capture_output=True, timeout=120)
    return (imread(png)[..., :3] * 255).round().astype(int)
