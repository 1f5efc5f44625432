"""Property-based fuzz of the inference endpoint (hypothesis): any JSON body, well-formed or not, gets
an answer below 500, from a plain server and from one serving a smoothed classifier."""
import json

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlwarden.core.target import TorchTarget
from mlwarden.serve.guards import GuardConfig

from .conftest import running

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=40)

tensor = st.fixed_dictionaries({
    "name": st.text(max_size=6),
    "shape": st.lists(st.integers(-2, 70), min_size=0, max_size=5),
    "datatype": st.sampled_from(["FP32", "FP64", "INT64", "UINT8", "BOOL", "STRING", ""]),
    "data": st.one_of(st.lists(st.floats(-5, 5) | st.just(float("nan")), max_size=140), json_values),
})
bodies = st.one_of(json_values, st.fixed_dictionaries({"inputs": st.lists(tensor, max_size=2)}),
                   st.fixed_dictionaries({"inputs": st.lists(tensor, min_size=1, max_size=1)},
                                         optional={"id": json_values, "parameters": json_values}))


@pytest.fixture(scope="module", params=["plain", "smoothing"])
def server(request, digits, digits_mlp):
    guards = GuardConfig(smoothing_sigma=0.25, smoothing_draws=20) if request.param == "smoothing" else GuardConfig()
    with running(TorchTarget(digits_mlp, 10, digits.input_shape), digits.space, guards) as url:
        with httpx.Client() as client:
            yield url, client


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=bodies)
def test_no_body_causes_a_5xx(server, payload):
    url, client = server
    raw = json.dumps(payload, allow_nan=True).encode()
    r = client.post(url + "/infer", content=raw, headers={"content-type": "application/json"})
    assert r.status_code < 500, (r.status_code, r.text[:300], raw[:300])
    if r.status_code >= 400:
        assert "error" in r.json()


def test_valid_body_passes(server, digits):
    url, client = server
    x = np.zeros((2, 1, 8, 8), np.float32)
    r = client.post(url + "/infer", json={"inputs": [{"name": "input", "shape": [2, 1, 8, 8], "datatype": "FP32",
                                                      "data": x.reshape(-1).tolist()}]})
    assert r.status_code == 200
