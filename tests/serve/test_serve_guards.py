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
    assert {ln["status"] for ln in lines} == {200, 401, 403, 429} and all("key" in ln for ln in lines)
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
    "integer 10**400": (b'{"inputs": [{"name": "input", "shape": [1, 64], "datatype": "INT64", "data": [1'
                        + b"0" * 400 + b"]" + b"}]}", 422, "too large for a float"),
    "float beyond float32": (json.dumps({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP64",
                                                     "data": [1e300] * 64}]}).encode(), 422, "float32 range"),
    "unknown output": (json.dumps({**body(np.zeros((1, 1, 8, 8))), "outputs": [{"name": "logits"}]}).encode(), 422,
                       "not 'logits'"),
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


def test_protocol_conformance_details(digits, target, tmp_path):
    """What a third-party OIP client relies on: JSON without a Content-Type, server metadata, model readiness
    and versioned paths, and every error (404, 405, 413) as {"error": ...}."""
    x = np.zeros((2, 1, 8, 8))
    with running(target, digits.space, GuardConfig()) as url:
        root = url.removesuffix("/v2/models/model")
        r = httpx.post(url + "/infer", content=json.dumps(body(x)).encode())   # no Content-Type header at all
        assert r.status_code == 200 and r.json()["outputs"][0]["shape"] == [2, 10]
        assert httpx.get(root + "/v2").json()["name"] == "mlwarden"
        assert httpx.get(url + "/ready").json() == {"name": "model", "ready": True}
        assert httpx.get(url + "/versions/1/ready").status_code == 200
        assert httpx.post(url + "/versions/1/infer", json=body(x)).status_code == 200
        r = httpx.post(url + "/versions/2/infer", json=body(x))
        assert r.status_code == 404 and "version 1 only" in r.json()["error"]
        r = httpx.put(url + "/infer")
        assert r.status_code == 405 and "not allowed" in r.json()["error"]
        r = httpx.get(root + "/v2/nothing/here")
        assert r.status_code == 404 and "no such route" in r.json()["error"]
        r = httpx.post(url + "/infer", content=b"{}", headers={"Inference-Header-Content-Length": "2"})
        assert r.status_code == 415 and "binary tensor data" in r.json()["error"]
        meta = httpx.get(url).json()
        assert meta["platform"] == "mlwarden/torch"
        schema = httpx.get(root + "/openapi.json").json()
        documented = schema["paths"]["/v2/models/{model_name}/infer"]["post"]["responses"]
        assert {"400", "401", "403", "404", "408", "413", "415", "422", "429"} <= set(documented)


def test_keyless_requests_are_refused_before_the_body_is_read_and_logged_salted(digits, target, tmp_path):
    log = tmp_path / "q.jsonl"
    with running(target, digits.space, GuardConfig(api_keys=["secret-key"], query_log=str(log))) as url:
        # a body that would be a 422 (and take parsing) gets the 401 first
        r = httpx.post(url + "/infer", content=b"{not json" + b" " * 100_000)
        assert r.status_code == 401
        r = httpx.post(url + "/infer", json={"inputs": []}, headers={"Authorization": "Bearer secret-key"})
        assert r.status_code == 422
    rows = [json.loads(s) for s in log.read_text().splitlines()]
    assert [r["status"] for r in rows] == [401, 422]
    import hashlib
    unsalted = hashlib.sha256(b"secret-key").hexdigest()[:12]
    assert rows[1]["key"] not in ("anonymous", unsalted) and rows[0]["key"] == "anonymous"


def test_a_slow_body_is_cut_off_with_408(digits, target):
    import socket
    import time
    with running(target, digits.space, GuardConfig(body_timeout_s=1.0)) as url:
        host, port = url.split("//")[1].split("/")[0].split(":")
        s = socket.create_connection((host, int(port)))
        s.sendall(b"POST /v2/models/model/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000\r\n\r\n{\"inputs\": ")
        t0 = time.monotonic()
        s.settimeout(10)
        reply = s.recv(4096).decode()
        s.close()
    assert reply.startswith("HTTP/1.1 408") and "took longer than 1 s" in reply
    assert time.monotonic() - t0 < 8


def test_an_unwritable_watermark_registry_is_refused_at_start(digits, target):
    from mlwarden.core.errors import UserError
    from mlwarden.serve.app import build_app
    with pytest.raises(UserError, match="cannot append"):
        build_app(target, digits.space, "model", GuardConfig(watermark_key="k", watermark_registry="/proc/x.jsonl"))
