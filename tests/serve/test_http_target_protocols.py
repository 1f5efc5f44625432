"""The HTTP target speaks MLflow `/invocations` and TF Serving `:predict` too, caches repeated inputs,
honours Retry-After and stops at a budget answered without it."""
import threading
import time

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from mlwarden.io.http_target import HttpTarget


def serve_app(app):
    import socket

    import uvicorn
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    return server, port


def fake(model, kind):
    app = FastAPI()
    state = {"calls": 0}

    @app.post("/invocations")
    async def mlflow(request: Request):
        x = torch.tensor((await request.json())["inputs"], dtype=torch.float32)
        return {"predictions": model(x).softmax(1).tolist()}

    @app.post("/v1/models/m:predict")
    async def tfs(request: Request):
        state["calls"] += 1
        if kind == "throttle" and state["calls"] % 2 == 1:
            return JSONResponse({"error": "slow down"}, status_code=429, headers={"Retry-After": "1"})
        if kind == "budget" and state["calls"] > 2:
            return JSONResponse({"error": "budget exhausted"}, status_code=429)
        x = torch.tensor((await request.json())["instances"], dtype=torch.float32)
        return {"predictions": model(x).argmax(1).tolist() if kind == "labels" else model(x).softmax(1).tolist()}

    return app, state


def test_mlflow_and_tf_serving_shapes(digits, digits_mlp):
    x = digits.x_test[:50]
    expect = digits_mlp(x).argmax(1)
    for path, kind, access in (("/invocations", "scores", "scores"), ("/v1/models/m:predict", "labels", "labels")):
        app, _ = fake(digits_mlp, kind)
        server, port = serve_app(app)
        try:
            t = HttpTarget(f"http://127.0.0.1:{port}{path}", 10, digits.input_shape)
            assert t.access.value == access and t.protocol in ("mlflow", "tfserving")
            assert torch.equal(t.labels(x), expect)
            before = t.queries
            t.labels(torch.cat([x, x[:10]]))  # all seen before: answered from the cache
            assert t.queries == before and t.cache_hits >= 60
        finally:
            server.should_exit = True


def test_retry_after_is_honoured_and_a_final_429_ends_the_attack(digits, digits_mlp):
    import pytest

    from mlwarden.core.errors import QueryBudgetExceeded
    app, state = fake(digits_mlp, "throttle")
    server, port = serve_app(app)
    try:
        t = HttpTarget(f"http://127.0.0.1:{port}/v1/models/m:predict", 10, digits.input_shape)
        t.scores(digits.x_test[:5])
        assert t.rate_limited_s >= 1 and state["calls"] >= 4
    finally:
        server.should_exit = True
    app, _ = fake(digits_mlp, "budget")
    server, port = serve_app(app)
    try:
        t = HttpTarget(f"http://127.0.0.1:{port}/v1/models/m:predict", 10, digits.input_shape)
        t.scores(digits.x_test[:5])
        with pytest.raises(QueryBudgetExceeded):
            t.scores(digits.x_test[5:10])
    finally:
        server.should_exit = True


def custom_api(model, seen):
    """A hand-written Flask-style service: its own field names, answers a bare list or a nested object, and
    one route that redirects to another host."""
    app = FastAPI()

    @app.post("/predict")
    async def predict(request: Request):
        body = await request.json()
        seen.append(request.headers.get("authorization"))
        x = torch.tensor(body["payload"]["features"], dtype=torch.float32)
        return model(x).softmax(1).tolist()

    @app.post("/nested")
    async def nested(request: Request):
        x = torch.tensor((await request.json())["rows"], dtype=torch.float32)
        return {"result": {"probs": model(x).softmax(1).tolist(), "version": 3}}

    @app.post("/moved")
    async def moved():
        return JSONResponse({}, status_code=307, headers={"location": "http://attacker.example/steal"})

    return app


def test_any_json_api_by_template_and_response_path_and_no_key_on_redirect(digits, digits_mlp):
    import pytest

    from mlwarden.core.errors import UserError
    seen = []
    server, port = serve_app(custom_api(digits_mlp, seen))
    x = digits.x_test[:30]
    want = digits_mlp(x).softmax(1)
    try:
        base = f"http://127.0.0.1:{port}"
        t = HttpTarget(base + "/predict", 10, digits.input_shape, api_key="k",
                       template={"payload": {"features": "{rows}", "model": "v1"}}, response_path="")
        assert t.protocol == "json" and t.access.value == "scores"
        assert torch.allclose(t.scores(x), want, atol=1e-5) and set(seen) == {"Bearer k"}
        t = HttpTarget(base + "/nested", 10, digits.input_shape, template={"rows": "{rows}"},
                       response_path="result.probs")
        assert torch.equal(t.labels(x), want.argmax(1))
        with pytest.raises(UserError, match="redirects to http://attacker.example/steal"):
            HttpTarget(base + "/moved", 10, digits.input_shape, api_key="k", template={"rows": "{rows}"},
                       response_path="")
        with pytest.raises(UserError, match="cannot read the answer"):
            HttpTarget(base + "/nested", 10, digits.input_shape, template={"rows": "{rows}"}, response_path="nope")
    finally:
        server.should_exit = True


def test_an_http_target_travels_to_a_worker_as_its_description(digits, digits_logreg):
    """A backend worker gets the target without its open connection and opens its own: same answers."""
    import cloudpickle

    from mlwarden.core.backend import ProcessBackend
    from mlwarden.core.target import TorchTarget
    from mlwarden.io.http_target import HttpTarget
    from mlwarden.serve.guards import GuardConfig

    from .conftest import running
    with running(TorchTarget(digits_logreg, 10, digits.input_shape), digits.space, GuardConfig()) as url:
        target = HttpTarget(url, 10, digits.input_shape, api_key=None)
        copy = cloudpickle.loads(cloudpickle.dumps(target))
        assert copy.client is not target.client and copy.url == target.url
        x = digits.x_test[:20]
        assert torch.equal(copy.labels(x), target.labels(x))
        fresh = HttpTarget(url, 10, digits.input_shape)   # nothing cached: the workers must ask the server
        sent = fresh.http_requests                        # the metadata and access probes
        pool = ProcessBackend(2)
        try:
            labels = pool.map(_labels_of, [0, 10], shared=(fresh, x))
        finally:
            pool.close()
        assert pool.ran_locally == 0 and torch.equal(torch.cat(labels), target.labels(x))
        assert fresh.http_requests == sent   # the parent's copy sent nothing more: the workers asked


def _labels_of(start, shared):
    target, x = shared
    before = target.http_requests
    labels = target.labels(x[start:start + 10])
    assert target.http_requests > before
    return labels
