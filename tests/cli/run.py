import contextlib
import os
import shutil
import subprocess
import time

from . import zygote


def mlwarden(*args, cwd=None, timeout=600, env_cache=None):
    env = dict(os.environ, COLUMNS="200", OMP_NUM_THREADS="1")
    if env_cache is not None:   # a cache of its own (reference models trained afresh)
        env["MLWARDEN_CACHE"] = str(env_cache)
    return zygote.run(args, cwd=cwd, env=env, timeout=timeout)


def infer_body(x) -> dict:
    return {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.flatten().tolist()}]}


def start_serve(*args, env=None) -> tuple[subprocess.Popen | zygote.Process, str]:
    """`mlwarden serve ARGS --port 0` in a subprocess: returns it and the base URL it announced, once it answers
    ready. The port is the one the server bound itself (a port picked here and bound later can be taken in
    between by another test's server, which would then answer this test's requests)."""
    import queue
    import re
    import threading

    import httpx
    p = zygote.popen(["serve", *args, "--port", "0"],
                     env=dict(os.environ, COLUMNS="200", OMP_NUM_THREADS="1", **(env or {})))
    lines: queue.Queue = queue.Queue()
    seen: list[str] = []
    threading.Thread(target=lambda: [lines.put(ln) for ln in p.stderr], daemon=True).start()
    deadline = time.monotonic() + 90
    url = None
    while url is None:
        assert time.monotonic() < deadline, "server did not start: " + "".join(seen)[-1500:]
        try:
            seen.append(lines.get(timeout=0.5))
        except queue.Empty:
            assert p.poll() is None, "server exited: " + "".join(seen)[-1500:]
            continue
        m = re.search(r"at (http://[^/\s]+)/v2/models/", seen[-1])
        url = m and m.group(1)
    while True:
        assert p.poll() is None, "server exited: " + "".join(seen)[-1500:]
        try:
            if httpx.get(f"{url}/v2/health/ready").status_code == 200:
                return p, url
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "server did not answer ready"
        time.sleep(0.2)


def stop(p: subprocess.Popen | zygote.Process) -> None:
    p.terminate()
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(10)


@contextlib.contextmanager
def served(model, *extra, data="digits", env=None):
    """`mlwarden serve MODEL --data digits` (or other --data; None: no --data) in a subprocess on a port of its
    own, until the block ends."""
    p, url = start_serve(model, *(["--data", data] if data else []), *extra, env=env)
    try:
        yield url
    finally:
        stop(p)


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
