"""A real `mlwarden serve` application on 127.0.0.1 (uvicorn in a thread), started by each test that
needs one and stopped after it."""
import contextlib
import socket
import threading
import time

import pytest


@contextlib.contextmanager
def running(target, space, guards, name="model", clean=None):
    import uvicorn

    from mlwarden.serve.app import build_app
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    server = uvicorn.Server(uvicorn.Config(build_app(target, space, name, guards, clean), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/v2/models/{name}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="session")
def digits_logreg(digits):
    from mlwarden.core.recipe import BUILTIN_RECIPES
    return BUILTIN_RECIPES["logreg"].fit(digits.x_train, digits.y_train, 10, seed=0)


@pytest.fixture(scope="session")
def cancer():
    from mlwarden.io.datasets import load_builtin
    return load_builtin("breast-cancer", seed=0)


@pytest.fixture(scope="session")
def cancer_logreg(cancer):
    from mlwarden.core.recipe import BUILTIN_RECIPES
    return BUILTIN_RECIPES["logreg"].fit(cancer.x_train, cancer.y_train, 2, seed=0)
