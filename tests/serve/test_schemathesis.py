"""A bounded schemathesis run (property-based requests generated from the server's own OpenAPI schema, valid
and invalid) against `mlwarden serve` on loopback, with and without an API key: no response is a 5xx, every
status is one the schema documents, and every body matches its documented schema."""
import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is part of the test extra")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,  # noqa: E402
                                               status_code_conformance)

from mlwarden.core.target import TorchTarget  # noqa: E402
from mlwarden.serve.guards import GuardConfig  # noqa: E402

from .conftest import running  # noqa: E402

pytestmark = pytest.mark.slow
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module", params=["open", "keyed"])
def api_schema(request, digits, digits_mlp):
    guards = GuardConfig(api_keys=["k"]) if request.param == "keyed" else GuardConfig()
    with running(TorchTarget(digits_mlp, 10, digits.input_shape), digits.space, guards) as url:
        base = url.removesuffix("/v2/models/model")
        yield schemathesis.openapi.from_url(base + "/openapi.json")


def test_no_5xx_and_only_documented_statuses(api_schema):
    """Generated requests are aimed at the served model (model 'model', version '1'; a random name would only
    ever meet the 404), and half of the infer bodies get a valid input tensor (random data rarely fits
    [n, 1, 8, 8] in [0, 1]) with the rest of the body as generated, so the model path itself is fuzzed."""
    operations = [r.ok() for r in api_schema.get_all_operations()]
    assert len(operations) >= 9                                 # metadata, versions, ready, infer, health
    for op in operations:
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=op.as_strategy(), aimed=st.booleans(), valid=st.booleans(), rows=st.integers(1, 3))
        def run(case, aimed, valid, rows):
            if aimed and case.path_parameters:
                case.path_parameters = {**case.path_parameters, "model_name": "model",
                                        **({"version": "1"} if "version" in case.path_parameters else {})}
            if valid and isinstance(case.body, dict) and isinstance(case.body.get("inputs"), list):
                case.body = {**case.body, "inputs": [{"name": "input", "shape": [rows, 1, 8, 8], "datatype": "FP32",
                                                      "data": [0.5] * (64 * rows)}]}
            case.call_and_validate(checks=CHECKS, headers={"Authorization": "Bearer k"} if aimed else None)
        run()
