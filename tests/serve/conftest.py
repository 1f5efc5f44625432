"""A real `mlwarden serve` application on 127.0.0.1 (uvicorn in a thread), started by each test that
needs one and stopped after it."""
import contextlib
import threading
import time

import pytest


@contextlib.contextmanager
def running(target, space, guards, name="model", clean=None, app=None):
    """`app`: an application already built (a test that inspects its state); else one is built here. The server
    is the one `mlwarden serve` runs (serve/server.py: its socket and its deadlines)."""
    from mlwarden.serve.app import build_app
    from mlwarden.serve.server import listen, server
    sock = listen("127.0.0.1", 0)
    port = sock.getsockname()[1]
    app = app if app is not None else build_app(target, space, name, guards, clean)
    srv = server(app, sock, guards.header_timeout_s)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/v2/models/{name}"
    finally:
        srv.should_exit = True
        thread.join(10)
        sock.close()


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
