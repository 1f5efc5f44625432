"""Encrypted inference (serve --encrypted): a real `mlwarden serve` process answers CKKS-encrypted digits and
only the client decrypts; the answers agree with plaintext on the whole test split; what an extraction
attack gets through the route; and hostile bodies get 4xx, never 5xx."""
from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest
import torch

pytest.importorskip("tenseal", reason="the [he] extra (CI installs it)")

from mlwarden.core.recipe import BUILTIN_RECIPES  # noqa: E402
from mlwarden.io.encrypted import EncryptedClient, EncryptedHttpTarget  # noqa: E402

from ..cli.run import served  # noqa: E402


@pytest.fixture(scope="module")
def logreg_file(digits, tmp_path_factory):
    model = BUILTIN_RECIPES["logreg"].fit(digits.x_train, digits.y_train, 10, seed=0)
    path = tmp_path_factory.mktemp("he") / "logreg.pt"
    torch.save(model.state_dict(), path)
    return path, model


@pytest.fixture(scope="module")
def server(logreg_file):
    path, _ = logreg_file
    with served(path, "--factory", "mlwarden.core.zoo:logreg", "--encrypted", "--max-batch", "4096",
                "--output", "rounded") as url:
        yield f"{url}/v2/models/model"


def test_encrypted_answers_agree_with_plaintext_on_the_whole_test_split(digits, logreg_file, server):
    _, model = logreg_file
    client = EncryptedClient(server)
    z = client.logits(digits.x_test.numpy())
    with torch.no_grad():
        ref = model(digits.x_test).double().numpy()
    assert z.shape == (450, 10)
    assert (z.argmax(1) == ref.argmax(1)).all()
    assert np.abs(z - ref).max() < 1e-4
    assert client.sent_bytes > 10 * len(digits.x_test) * 64 * 4     # what encryption costs on the wire


def test_extraction_gets_exact_scores_through_the_encrypted_route(digits, server, tmp_path):
    """The plaintext route rounds (--output rounded); the encrypted one cannot: equation solving copies the
    model from d + 1 encrypted queries."""
    from mlwarden.core.registry import all_threats
    from mlwarden.core.threat import Context
    target = EncryptedHttpTarget(EncryptedClient(server), 10, digits.input_shape)
    threat = all_threats()["extract-equation-solving"]
    ctx = Context(target=target, data=digits, evidence_dir=tmp_path / "evidence" / "x")
    f = threat.run(ctx, threat.params_for("quick"))
    assert f.details["method"] == "exact equation solving"
    assert f.queries == 65 and f.metrics[0].value >= 0.99, f.headline
    from mlwarden.io.http_target import HttpTarget
    plain = Context(target=HttpTarget(server, 10, digits.input_shape), data=digits,
                    evidence_dir=tmp_path / "evidence" / "y")
    g = threat.run(plain, threat.params_for("quick"))
    assert g.details["method"].startswith("loss minimisation") and g.queries > 65   # rounded: the fallback


def test_a_square_activation_network_runs_encrypted(digits):
    from fastapi.testclient import TestClient

    from mlwarden.core.target import TorchTarget
    from mlwarden.serve.app import build_app
    from mlwarden.serve.guards import GuardConfig
    model = BUILTIN_RECIPES["square-mlp"].fit(digits.x_train, digits.y_train, 10, seed=0)
    app = build_app(TorchTarget(model, 10, digits.input_shape), digits.space, "m", GuardConfig(encrypted=True))
    client = EncryptedClient("http://testserver/v2/models/m", depth=3, http=TestClient(app))
    x = digits.x_test[:100]
    z = client.logits(x.numpy())
    with torch.no_grad():
        ref = model(x).double().numpy()
    assert (z.argmax(1) == ref.argmax(1)).all() and np.abs(z - ref).max() < 0.1


def test_hostile_encrypted_bodies_get_4xx(digits, server):
    import tenseal as ts
    client = EncryptedClient(server)
    good = ts.ckks_vector(client.ctx, [0.5] * 3).serialize()
    private = base64.b64encode(client.ctx.serialize(save_secret_key=True)).decode()
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    bodies = {
        "garbage base64": {"context": "%%%", "inputs": ["x"] * 64, "rows": 1},
        "random bytes as context": {"context": b64(b"\x00" * 500), "inputs": [b64(good)] * 64, "rows": 3},
        "secret key sent": {"context": private, "inputs": [b64(good)] * 64, "rows": 3},
        "too few ciphertexts": {"context": client.public, "inputs": [b64(good)] * 3, "rows": 3},
        "rows mismatch": {"context": client.public, "inputs": [b64(good)] * 64, "rows": 5},
        "random ciphertext": {"context": client.public, "inputs": [b64(b"\x01" * 2000)] * 64, "rows": 3},
        "extra key": {"context": client.public, "inputs": [], "rows": 1, "more": 1},
        "rows 0": {"context": client.public, "inputs": [], "rows": 0},
    }
    for what, body in bodies.items():
        r = httpx.post(f"{server}/encrypted-infer", json=body, timeout=60)
        assert 400 <= r.status_code < 500, (what, r.status_code, r.text[:300])
        assert "error" in r.json(), what
    r = httpx.post(f"{server}/encrypted-infer", content=b"x" * (65 * 1024 * 1024), timeout=60,
                   headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_audit_of_an_encrypted_endpoint_says_what_guards_are_left(server, tmp_path):
    """mlwarden audit --endpoint URL --endpoint-encrypted 1: the report states that encrypted answers are exact
    scores no output guard can touch, and measures what equation solving copies through them."""
    import json

    from ..cli.run import mlwarden
    out = tmp_path / "enc"
    r = mlwarden("audit", "--endpoint", server, "--endpoint-encrypted", "1", "--data", "digits",
                 "--threats", "extract-equation-solving", "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert "only guards left" in report["subject"]["model"]["note"]
    f = report["findings"][0]
    assert f["queries"] == 65 and f["severity"] == "critical", f["headline"]
    assert "only guards left" in (out / "report.md").read_text()


def test_the_worker_process_absorbs_what_would_hurt_the_server(digits):
    """The CKKS work runs in a worker process with a deadline: past it the request is a 422, the worker is
    replaced and the next request is answered; only the exact route gets the larger body limit."""
    from fastapi.testclient import TestClient

    from mlwarden.core.target import TorchTarget
    from mlwarden.serve.app import build_app
    from mlwarden.serve.guards import GuardConfig
    model = BUILTIN_RECIPES["logreg"].fit(digits.x_train, digits.y_train, 10, seed=0)
    app = build_app(TorchTarget(model, 10, digits.input_shape), digits.space, "m",
                    GuardConfig(encrypted=True, encrypted_timeout_s=60))
    tc = TestClient(app)
    client = EncryptedClient("http://testserver/v2/models/m", http=tc)
    x = digits.x_test[:20].numpy()
    worker = app.state.he_worker
    worker.timeout_s = 1e-4
    with pytest.raises(Exception, match="422.*took longer"):
        client.logits(x)
    worker.timeout_s = 60
    assert client.logits(x).shape == (20, 10)          # a fresh worker answers
    big = tc.post("/v2/other/encrypted-infer", content=b"x" * (9 * 1024 * 1024),
                  headers={"content-type": "application/json"})
    assert big.status_code == 413                           # not the encrypted route: the normal 8 MiB limit
    worker.close()


def test_label_recovery_and_alie_on_degenerate_inputs():
    from mlwarden.threats.federated.alie import alie, alie_z
    from mlwarden.threats.federated.idlg import idlg_labels
    zero = [torch.zeros(10, 64), torch.zeros(10)]
    assert idlg_labels(zero, 4, 10).tolist() == [0, 1, 2, 3]       # nothing to read: no crash, no NaN
    assert np.isfinite(alie_z(6, 4)) and np.isfinite(alie_z(10, 7))   # a malicious majority
    u = torch.randn(6, 20)
    bad = torch.tensor([True] + [False] * 5)
    assert torch.isfinite(alie(u, bad, None, "partial")).all()      # one colluder, partial knowledge
