"""PRADA-style detection and the DAWN-style watermark, through a real server."""
import json

import httpx
import pytest
import torch

from mlwarden.core.recipe import BUILTIN_RECIPES
from mlwarden.core.registry import all_threats
from mlwarden.core.target import TorchTarget
from mlwarden.core.threat import Context
from mlwarden.io.http_target import HttpTarget
from mlwarden.serve.guards import GuardConfig
from mlwarden.serve.watermark import load_registry, verify_copy
from mlwarden.threats.model_extraction.jacobian import jacobian_queries

from .conftest import running


def send(url, key, x):
    x = x.numpy()
    return httpx.post(url + "/infer", headers={"Authorization": f"Bearer {key}"},
                      json={"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                        "data": x.reshape(-1).tolist()}]})


SALT = "fixed-for-the-test"   # the log's key ids are salted; the server takes this salt instead of a random one


def alerts(log, key_prefix):
    from mlwarden.serve.guards import key_id
    rows = [json.loads(s) for s in log.read_text().splitlines()]
    kid = key_id(key_prefix, SALT)
    seen, first = 0, None
    for r in rows:
        if r["key"] != kid or r.get("status") != 200:
            continue
        if "alert" in r and first is None:
            first = seen
        if "alert" not in r:
            seen += r["rows"]
    return first


def test_detector_flags_jacobian_attacker_not_benign_client_with_repeats(digits, digits_mlp, tmp_path):
    log = tmp_path / "q.jsonl"
    guards = GuardConfig(detector="alert", api_keys=["benign", "attacker"], query_log=str(log), key_salt=SALT)
    with running(TorchTarget(digits_mlp, 10, digits.input_shape), digits.space, guards) as url:
        x = torch.cat([digits.x_test, digits.x_test[:100]])  # ordinary data, 100 exact repeats
        for i in range(0, len(x), 10):
            assert send(url, "benign", x[i:i + 10]).status_code == 200
        target = HttpTarget(url, 10, digits.input_shape, api_key="attacker", chunk=20, concurrency=1)
        ctx = Context(target=target, data=digits, evidence_dir=tmp_path)
        jacobian_queries(ctx, all_threats()["extract-jacobian"].params_for("quick", {"rounds": 4}))
    assert alerts(log, "benign") is None
    first = alerts(log, "attacker")
    assert first is not None and first <= 400, first


def test_detector_blocks_when_asked_and_misses_uniform_queries(digits, digits_mlp, tmp_path):
    guards = GuardConfig(detector="block", api_keys=["attacker", "uniform"])
    with running(TorchTarget(digits_mlp, 10, digits.input_shape), digits.space, guards) as url:
        target = HttpTarget(url, 10, digits.input_shape, api_key="attacker", chunk=20, concurrency=1)
        ctx = Context(target=target, data=digits, evidence_dir=tmp_path)
        with pytest.raises(Exception, match="403"):
            jacobian_queries(ctx, all_threats()["extract-jacobian"].params_for("quick", {"rounds": 5}))
        g = torch.Generator().manual_seed(0)
        for _ in range(30):  # 600 uniform random queries: the documented blind spot
            assert send(url, "uniform", torch.rand((20, 1, 8, 8), generator=g)).status_code == 200


def test_watermark_identifies_a_stolen_copy_not_an_independent_model(digits, digits_mlp, tmp_path):
    reg = tmp_path / "wm.jsonl"
    guards = GuardConfig(watermark_key="owner-secret", watermark_rate=0.02, watermark_registry=str(reg))
    with running(TorchTarget(digits_mlp, 10, digits.input_shape), digits.space, guards) as url:
        target = HttpTarget(url, 10, digits.input_shape)
        threat = all_threats()["extract-knockoff"]
        ctx = Context(target=target, data=digits, evidence_dir=tmp_path / "evidence" / "knockoff",
                      recipe=BUILTIN_RECIPES["mlp"])
        f = threat.run(ctx, threat.params_for("quick", {"budget": 5000, "epochs": 80}))
    stolen = BUILTIN_RECIPES["mlp"].make_model(digits.input_shape, 10)
    stolen.load_state_dict(torch.load(tmp_path / f.evidence[0], weights_only=True))
    independent = BUILTIN_RECIPES["mlp"].fit(digits.x_train, digits.y_train, 10, seed=7)
    records = load_registry(reg)
    assert len({tuple(r["input"]) for r in records}) >= 10
    fresh = digits.x_test
    copy = verify_copy(stolen.eval(), digits_mlp, records, fresh, digits.input_shape)
    indep = verify_copy(independent, digits_mlp, records, fresh, digits.input_shape)
    assert copy.copied and copy.p_value < 1e-6, copy
    assert not indep.copied and indep.p_value > 0.01, indep
