"""The guarded OIP v2 server over real HTTP: protocol, output modes, keys, limits, validation, log."""
import json

import httpx
import numpy as np
import pytest

from mlwarden.core.target import TorchTarget
from mlwarden.serve.guards import GuardConfig

from .conftest import running


def body(x, name="input"):
    x = np.asarray(x, dtype=np.float32)
    return {"inputs": [{"name": name, "shape": list(x.shape), "datatype": "FP32", "data": x.reshape(-1).tolist()}]}


@pytest.fixture()
def target(digits, digits_mlp):
    return TorchTarget(digits_mlp, 10, digits.input_shape)


def test_oip_endpoints_and_output_modes(digits, target):
    x = digits.x_test[:5].numpy()
    with running(target, digits.space, GuardConfig()) as url:
        base = url.rsplit("/v2/", 1)[0]
        assert httpx.get(base + "/v2/health/live").json() == {"live": True}
        assert httpx.get(base + "/v2/health/ready").json() == {"ready": True}
        meta = httpx.get(url).json()
        assert meta["inputs"][0]["shape"] == [-1, 1, 8, 8] and meta["outputs"][0]["shape"] == [-1, 10]
        assert meta["parameters"]["guards"]["output"] == "probabilities"
        assert "/v2/models/{model_name}/infer" in httpx.get(base + "/openapi.json").json()["paths"]
        out = httpx.post(url + "/infer", json=body(x)).json()["outputs"][0]
        p = np.asarray(out["data"]).reshape(out["shape"])
        assert p.shape == (5, 10) and np.allclose(p.sum(1), 1, atol=1e-5)
        assert (p.argmax(1) == digits.y_test[:5].numpy()).mean() >= 0.8
    for guards, check in (
        (GuardConfig(output="rounded", decimals=2), lambda o: np.allclose(np.asarray(o["data"]) * 100,
                                                                           np.round(np.asarray(o["data"]) * 100), atol=1e-4)),
        (GuardConfig(output="top-k", top_k=2), lambda o: (np.asarray(o["data"]).reshape(5, 10) > 0).sum(1).max() <= 2),
        (GuardConfig(output="label"), lambda o: o["datatype"] == "INT64" and o["shape"] == [5]),
    ):
        with running(target, digits.space, guards) as url:
            o = httpx.post(url + "/infer", json=body(x)).json()["outputs"][0]
            assert check(o), (guards.output, o)


def test_api_keys_rate_limit_budget_and_log(digits, target, tmp_path):
    log = tmp_path / "q.jsonl"
    g = GuardConfig(api_keys=["k1", "k2"], rate_per_s=2, burst=3, budget=40, query_log=str(log))
    x = digits.x_test[:4].numpy()
    with running(target, digits.space, g) as url:
        assert httpx.post(url + "/infer", json=body(x)).status_code == 401
        assert httpx.post(url + "/infer", json=body(x), headers={"Authorization": "Bearer nope"}).status_code == 403
        h1 = {"Authorization": "Bearer k1"}
        codes = [httpx.post(url + "/infer", json=body(x), headers=h1) for _ in range(5)]
        assert [r.status_code for r in codes[:3]] == [200, 200, 200]
        limited = [r for r in codes if r.status_code == 429]
        assert limited and int(limited[0].headers["retry-after"]) >= 1
        # the budget counts rows per key: k2 may send 40 rows, then never more (no Retry-After)
        h2 = {"Authorization": "Bearer k2"}
        big = body(digits.x_test[:40].numpy())
        assert httpx.post(url + "/infer", json=big, headers=h2).status_code == 200
        r = httpx.post(url + "/infer", json=body(x[:1]), headers=h2)
        assert r.status_code == 429 and "budget" in r.json()["error"] and "retry-after" not in r.headers
    lines = [json.loads(s) for s in log.read_text().splitlines()]
    assert {ln["status"] for ln in lines} == {200, 429} and all("key" in ln for ln in lines)
    assert "k1" not in log.read_text()  # keys are logged as hashes


MALFORMED = {
    "bad JSON": (b"{not json", 400, "not valid JSON"),
    "missing inputs": (json.dumps({}).encode(), 422, "inputs"),
    "wrong shape": (json.dumps(body(np.zeros((2, 5)))).encode(), 422, "inputs.0.shape"),
    "too few values": (json.dumps({"inputs": [{"name": "input", "shape": [2, 1, 8, 8], "datatype": "FP32",
                                               "data": [0.0] * 10}]}).encode(), 422, "do not fill shape"),
    "NaN": (json.dumps(body(np.full((1, 1, 8, 8), np.nan))).encode(), 422, "NaN"),
    "out of range": (json.dumps(body(np.full((1, 1, 8, 8), 7.0))).encode(), 422, "must lie in"),
    "strings": (json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                                        "data": ["a"] * 64}]}).encode(), 422, "must be numbers"),
    "bad datatype": (json.dumps({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "STRING",
                                             "data": [0] * 64}]}).encode(), 422, "datatype"),
    "huge batch": (json.dumps(body(np.zeros((1100, 1, 8, 8)))).encode(), 413, "batch of 1100"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_requests_get_4xx_naming_the_problem(digits, target, case):
    raw, status, words = MALFORMED[case]
    with running(target, digits.space, GuardConfig()) as url:
        r = httpx.post(url + "/infer", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == status, (r.status_code, r.text)
        assert words in r.json()["error"]
        other = url.rsplit("/", 1)[0] + "/other/infer"
        r = httpx.post(other, json=body(np.zeros((1, 1, 8, 8))))
        assert r.status_code == 404 and "is not served here" in r.json()["error"]


def test_huge_body_is_413_before_parsing(digits, target):
    with running(target, digits.space, GuardConfig(max_body_bytes=2048)) as url:
        r = httpx.post(url + "/infer", content=b"[" + b"0," * 5000 + b"0]",
                       headers={"content-type": "application/json"})
        assert r.status_code == 413 and "exceeds the limit" in r.json()["error"]
