"""`mlwarden serve` against a hostile client, over real HTTP (and raw sockets): the server never answers a 5xx
other than a 503 for a failing disk, and its limits hold. One test per finding of the probe: two identities in
one request, inputs whose scores are not finite, a full disk or a removed folder, connections that never
finish their headers, rotating key ids, a ciphertext of another CKKS context, a port in use, and --strip on a
torch.export model."""
import errno
import json
import secrets
import shutil
import socket
import sys
import time

import httpx
import numpy as np
import pytest
import torch

from mlwarden.core.data import InputSpace
from mlwarden.core.target import TorchTarget, sklearn_target
from mlwarden.serve.app import build_app
from mlwarden.serve.guards import GuardConfig, Journal, key_id

from .conftest import running

UNBOUNDED = InputSpace(float("-inf"), float("inf"), False)   # served without --data or --input-range


def body(x):
    x = np.asarray(x, dtype=np.float32)
    return {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.reshape(-1).tolist()}]}


def bearer(*keys):
    return httpx.Headers([("Authorization", f"Bearer {k}") for k in keys])


@pytest.fixture(scope="module")
def exported(digits, digits_mlp, tmp_path_factory):
    """The digits MLP as mlwarden serve loads a .pt2: a torch.fx GraphModule from torch.export."""
    from mlwarden.io.models import load_target, save_module
    saved = save_module(digits_mlp, digits, tmp_path_factory.mktemp("pt2") / "mlp")
    assert saved["format"] == "export"
    return load_target(saved["path"], digits)


def test_two_authorization_headers_are_refused_and_the_limits_hold(digits, digits_mlp):
    g = GuardConfig(api_keys=["k1", "k2"], rate_per_s=0.5, burst=5, budget=40)
    x = digits.x_test[:1].numpy()
    with running(TorchTarget(digits_mlp, 10, digits.input_shape), digits.space, g) as url:
        answered = 0
        with httpx.Client() as c:
            for i in range(60):   # the probe: a fresh random key beside a real one, in either order
                pair = (f"r{secrets.token_hex(4)}", "k1") if i % 2 else ("k1", f"r{secrets.token_hex(4)}")
                r = c.post(url + "/infer", json=body(x), headers=bearer(*pair))
                assert r.status_code == 400 and "2 Authorization headers" in r.json()["error"], r.text
                answered += r.status_code == 200
            both = c.post(url + "/infer", json=body(x), headers=bearer("k1", "k1"))
            assert both.status_code == 400          # even the same key twice: one identity a request
            joined = c.post(url + "/infer", json=body(x), headers={"Authorization": "Bearer k1, Bearer k2"})
            assert joined.status_code == 403
            t0 = time.monotonic()
            codes = [c.post(url + "/infer", json=body(x), headers=bearer("k1")).status_code for _ in range(60)]
            elapsed = time.monotonic() - t0
            # budget: 40 rows per key, whatever the batches
            rows = [c.post(url + "/infer", json=body(digits.x_test[:15].numpy()), headers=bearer("k2")).status_code
                    for _ in range(4)]
    assert answered == 0
    assert codes.count(200) <= 5 + 0.5 * elapsed + 1 and codes.count(429) >= 50, (codes.count(200), elapsed)
    assert rows == [200, 200, 429, 429]   # 30 rows answered; 45 would pass the budget of 40


def test_non_finite_scores_are_a_422_in_every_output_mode_never_a_500(digits, exported):
    from sklearn.linear_model import LogisticRegression
    flat = digits.x_train[:300].reshape(300, -1).numpy()
    est = LogisticRegression(max_iter=500).fit(flat, digits.y_train[:300].numpy())
    skl = sklearn_target(est, 10, digits.input_shape)   # as a skops file serves: float32 in, NaN out at 3.4e38
    huge = np.full((2, 1, 8, 8), 3.4e38, dtype=np.float32)   # finite float32: no input range refuses it
    nan_literals = b'{"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [NaN' \
                   + b", Infinity" * 63 + b"]}]}"
    seen = {}
    for target in (exported, skl):
        for output in ("probabilities", "top-k", "rounded", "label"):
            with running(target, UNBOUNDED, GuardConfig(output=output, top_k=3)) as url:
                r = httpx.post(url + "/infer", json=body(huge))
                seen[(target.kind, output)] = r.status_code
                assert r.status_code == 422 and "not finite" in r.json()["error"], (target.kind, output, r.text)
                r = httpx.post(url + "/infer", content=nan_literals, headers={"content-type": "application/json"})
                assert r.status_code == 422 and "NaN or infinite" in r.json()["error"], r.text
                assert httpx.post(url + "/infer", json=body(digits.x_test[:2].numpy())).status_code == 200

    class Broken(TorchTarget):   # a model that raises on a request: the request's fault, a short 422
        def _scores(self, x):
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (internal detail)")
    with running(Broken(torch.nn.Identity(), 10, digits.input_shape), UNBOUNDED, GuardConfig()) as url:
        r = httpx.post(url + "/infer", json=body(digits.x_test[:1].numpy()))
    assert r.status_code == 422 and "RuntimeError" in r.json()["error"] and "internal" not in r.text, r.text
    assert len(seen) == 8


def test_a_failing_disk_is_a_503_for_every_request_alike_and_the_server_recovers(digits, digits_mlp, tmp_path,
                                                                                 monkeypatch):
    from mlwarden.serve.watermark import Watermark
    (tmp_path / "wm").mkdir()
    registry = tmp_path / "wm" / "registry.jsonl"
    g = GuardConfig(watermark_key="owner", watermark_rate=0.3, watermark_registry=str(registry),
                    query_log=str(tmp_path / "q.jsonl"))
    marks = Watermark("owner", 0.3, None)
    rows = digits.x_test[:40].numpy()
    marked = [(marks._hash(r) % 1_000_000) / 1_000_000 < 0.3 for r in rows]
    assert 3 <= sum(marked) <= 37          # the rows below hold both watermarked and plain queries
    target = TorchTarget(digits_mlp, 10, digits.input_shape)
    with running(target, digits.space, g) as url:
        ask = [httpx.post(url + "/infer", json=body(r[None])) for r in rows[:10]]
        assert [r.status_code for r in ask] == [200] * 10
        shutil.rmtree(tmp_path / "wm")      # the registry's folder removed while the server runs
        ask = [httpx.post(url + "/infer", json=body(r[None])) for r in rows[10:30]]
        assert [r.status_code for r in ask] == [503] * 20, [r.status_code for r in ask]   # marked or not
        assert {r.headers["retry-after"] for r in ask} == {"5"} and "disk" in ask[0].json()["error"]
        assert httpx.get(url.split("/v2/")[0] + "/v2/health/ready").status_code == 503
        assert httpx.get(url.split("/v2/")[0] + "/v2/health/live").status_code == 200
        (tmp_path / "wm").mkdir()
        time.sleep(Journal.RETRY_S + 0.1)
        ask = [httpx.post(url + "/infer", json=body(r[None])) for r in rows[30:]]
        assert [r.status_code for r in ask] == [200] * 10
    assert len(registry.read_text().splitlines()) == sum(marked[30:])

    class Full:   # the file on a disk with no space left: every write raises ENOSPC
        def __init__(self, path):
            self.f = open(path, "a")

        def fileno(self):
            return self.f.fileno()

        def write(self, _):
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self):
            self.f.close()
    monkeypatch.setattr(Journal, "_open", lambda self: Full(self.path))
    app = build_app(target, digits.space, "model", GuardConfig(query_log=str(tmp_path / "full.jsonl")))
    with running(target, digits.space, g, app=app) as url:
        first = httpx.post(url + "/infer", json=body(rows[:1]))   # its line stays in memory
        later = [httpx.post(url + "/infer", json=body(r[None])).status_code for r in rows[1:6]]
        monkeypatch.undo()                   # space again: the pending line is written, requests answered
        time.sleep(Journal.RETRY_S + 0.1)
        again = httpx.post(url + "/infer", json=body(rows[:1])).status_code
    assert first.status_code == 200 and later == [503] * 5 and again == 200
    lines = [json.loads(s) for s in (tmp_path / "full.jsonl").read_text().splitlines()]
    assert lines[0]["status"] == 200 and lines[-1]["status"] == 200 and len(lines) == 7


def test_connections_that_never_finish_their_headers_are_closed(digits, digits_mlp):
    g = GuardConfig(header_timeout_s=1.0)
    with running(TorchTarget(digits_mlp, 10, digits.input_shape), digits.space, g) as url:
        host, port = url.split("//")[1].split("/")[0].split(":")
        socks = []
        for i in range(300):
            s = socket.create_connection((host, int(port)))
            if i % 3:   # a partial header, or nothing at all
                s.sendall(b"POST /v2/models/model/infer HTTP/1.1\r\nHost: x\r\nContent-")
            socks.append(s)
        t0 = time.monotonic()
        closed, replies = 0, set()
        for s in socks:
            s.settimeout(max(0.1, t0 + 5 - time.monotonic()))
            data = b""
            try:
                while chunk := s.recv(4096):
                    data += chunk
                closed += 1
            except ConnectionResetError:
                closed += 1
            except (TimeoutError, socket.timeout):
                pass
            replies.add(data.split(b"\r\n", 1)[0])
            s.close()
        waited = time.monotonic() - t0
        assert httpx.post(url + "/infer", json=body(digits.x_test[:1].numpy())).status_code == 200
    assert closed == 300 and waited < 5, (closed, waited)
    assert replies == {b"", b"HTTP/1.1 408 Request Timeout"}


def test_rotating_key_ids_create_no_state_and_the_detector_stays_bounded(digits, digits_mlp, tmp_path, monkeypatch):
    import mlwarden.serve.prada as prada
    for name, cap in (("MAX_CLIENTS", 3), ("MAX_KEPT", 50), ("MAX_DISTANCES", 100), ("MAX_SEEN", 200)):
        monkeypatch.setattr(prada, name, cap)
    keys = [f"key-{i}" for i in range(6)]
    log = tmp_path / "q.jsonl"
    g = GuardConfig(api_keys=keys, detector="alert", query_log=str(log), key_salt="salt")
    target = TorchTarget(digits_mlp, 10, digits.input_shape)
    app = build_app(target, digits.space, "model", g)
    x = digits.x_test[:1].numpy()
    with running(target, digits.space, g, app=app) as url, httpx.Client() as c:
        for i in range(150):   # the probe's 262 ids: rotated keys, alone or beside a real one
            headers = bearer(f"k{secrets.token_hex(6)}") if i % 2 else bearer(f"k{secrets.token_hex(6)}", keys[0])
            assert c.post(url + "/infer", json=body(x), headers=headers).status_code in (400, 403)
        assert len(app.state.detector.clients) == 0 and app.state.limits.used == {}
        rng = np.random.default_rng(0)
        for k in keys:
            for _ in range(4):
                r = c.post(url + "/infer", json=body(rng.random((100, 1, 8, 8))), headers=bearer(k))
                assert r.status_code == 200
    tracked = app.state.detector.clients
    assert list(tracked) == [key_id(k, "salt") for k in keys[-3:]]     # the least recently seen forgotten
    for st in tracked.values():
        assert st.kept <= 50 and len(st.seen) == 200 and len(st.distances) == 100 and st.observed > 300
    ids = [json.loads(s)["key"] for s in log.read_text().splitlines()]
    assert set(ids) == {"invalid"} | {key_id(k, "salt") for k in keys} and ids.count("invalid") == 150


def test_a_ciphertext_made_under_another_context_is_refused(digits, digits_logreg):
    import base64

    import tenseal as ts

    from mlwarden.io.encrypted import EncryptedClient
    model = digits_logreg
    g = GuardConfig(encrypted=True, encrypted_timeout_s=60)
    x = digits.x_test[:3].reshape(3, -1).numpy().astype(np.float64)
    with running(TorchTarget(model, 10, digits.input_shape), digits.space, g) as url:
        client = EncryptedClient(url)

        def ask(cts):
            return httpx.post(url + "/encrypted-infer", timeout=120, json={
                "context": client.public, "rows": 3,
                "inputs": [base64.b64encode(c.serialize()).decode() for c in cts]})
        other = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=8192, coeff_mod_bit_sizes=[60, 40, 60])
        other.global_scale = 2 ** 30       # the same ring and chain, another scale: SEAL loads it
        r = ask([ts.ckks_vector(other, x[:, 0].tolist())] * 64)
        assert r.status_code == 422 and "another context" in r.json()["error"], r.text
        lower = ts.ckks_vector(client.ctx, x[:, 0].tolist()) * ([1.0] * 3)   # rescaled: below a fresh one's level
        r = ask([lower] * 64)
        assert r.status_code == 422 and "first level" in r.json()["error"], r.text
        ok = ask([ts.ckks_vector(client.ctx, x[:, i].tolist()) for i in range(64)])
        assert ok.status_code == 200, ok.text
        out = [ts.ckks_vector_from(client.ctx, base64.b64decode(c)).decrypt() for c in ok.json()["outputs"]]
    with torch.no_grad():
        ref = model(digits.x_test[:3]).double().numpy()
    assert np.abs(np.array(out).T - ref).max() < 1e-3


def test_a_port_in_use_is_a_one_line_error_and_exit_2(monkeypatch, capsys):
    from mlwarden.cli.main import entry
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    monkeypatch.setattr(sys, "argv", ["mlwarden", "serve", "--port", str(busy.getsockname()[1])])
    with pytest.raises(SystemExit) as e:
        entry()
    busy.close()
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and "already in use" in err, err


def test_strip_guards_a_torch_export_model(digits, exported):
    with pytest.raises(NotImplementedError):   # torch's exported module refuses eval(): it crashed --strip at start
        exported.module.program.eval()
    assert exported.module.eval().training is False     # mlwarden's wrapper of it takes it
    g = GuardConfig(strip=True, strip_draws=10)
    with running(exported, digits.space, g, clean=digits.x_train[:1000]) as url:
        assert httpx.get(url).json()["parameters"]["strip"]["draws_per_row"] == 10
        codes = [httpx.post(url + "/infer", json=body(r[None])).status_code for r in digits.x_test[:10].numpy()]
    assert codes.count(200) >= 8 and set(codes) <= {200, 422}, codes


def test_a_content_length_of_thousands_of_digits_and_a_model_named_ready(digits, digits_mlp):
    """Found by a second probe: Content-Length of 4,400 zeros and a 1 passes the HTTP parser and made Python's
    int() raise (its 4,300-digit limit) outside every handler: a 500 on any route without a key. And a model
    named 'ready' was served without a key, since the auth check skipped every path ending in /ready."""
    g = GuardConfig(api_keys=["k1"])
    with running(TorchTarget(digits_mlp, 10, digits.input_shape), digits.space, g, name="ready") as url:
        host, port = url.split("//")[1].split("/")[0].split(":")
        for path in ("/v2/health/live", "/v2/models/ready/infer"):
            with socket.create_connection((host, int(port)), timeout=10) as s:
                s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k1\r\n"
                          f"Content-Length: {'0' * 4400}1\r\n\r\nx".encode())
                status = s.recv(4096).split(b" ", 2)[1]
            assert status.startswith(b"4"), (path, status)
        assert httpx.get(url).status_code == 401                          # the model's metadata needs the key
        assert httpx.get(url, headers=bearer("k1")).status_code == 200
        assert httpx.get(url + "/ready").status_code == 200               # readiness stays open
