"""`mlwarden serve --strip` in front of the BadNets MNIST model (conftest: 10% poison, 3x3 patch, target 3),
called by a real Open Inference Protocol client (tritonclient, HTTP): clean digits are answered, with the
guard's cost (forward passes) in the response; a batch with triggered digits is refused with a 422 that
names STRIP and the rows; the model metadata reports the calibration; the query log records the refusal."""
import json

import numpy as np
import pytest

from mlwarden.core.target import TorchTarget
from mlwarden.serve.guards import GuardConfig

from .conftest import running

th = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is part of the test extra")
from tritonclient.utils import InferenceServerException  # noqa: E402


def _inputs(x):
    i = th.InferInput("input", list(x.shape), "FP32")
    i.set_data_from_numpy(x, binary_data=False)
    return [i]


def test_strip_guard_answers_clean_digits_and_refuses_triggered_ones(mnist, badnets_cnn, badnets_trigger, tmp_path):
    log = tmp_path / "queries.jsonl"
    guards = GuardConfig(strip=True, strip_draws=20, strip_frr=0.01, query_log=str(log))
    target = TorchTarget(badnets_cnn, 10, mnist.input_shape)
    with running(target, mnist.space, guards, clean=mnist.x_train[:1000]) as url:
        c = th.InferenceServerClient(url.removeprefix("http://").split("/")[0])
        meta = c.get_model_metadata("model")
        strip = meta["parameters"]["strip"]
        assert strip["draws_per_row"] == 20 and strip["calibration_images"] == 500 and strip["calibrated_frr"] == 0.01
        answered, refused = 0, 0
        for row in mnist.x_test[:10].numpy():        # one row a request: a refusal costs only that row
            try:
                r = c.infer("model", _inputs(row[None]))
                assert r.get_response()["parameters"]["strip_forward_passes"] == 20
                assert np.isclose(r.as_numpy("probabilities").sum(), 1.0, atol=1e-4)
                answered += 1
            except InferenceServerException:
                refused += 1
        assert answered >= 8, f"{refused} of 10 clean digits refused at a 1% calibrated false rejection rate"
        triggered = badnets_trigger(mnist.x_test[mnist.y_test != 3][:4]).numpy()
        batch = np.concatenate([mnist.x_test[:2].numpy(), triggered])
        with pytest.raises(InferenceServerException) as e:
            c.infer("model", _inputs(batch))
        # the message names the first refused rows ("row 2 (...), 3 (...)"; a clean row may join them: STRIP draws
        # fresh superimpositions for every request, at a 1% calibrated false rejection rate); the log lists them all
        assert "STRIP" in e.value.message() and " 2 (" in e.value.message(), e.value.message()   # first 5 rows shown
        assert str(e.value.status()) == "422"
    lines = [json.loads(ln) for ln in log.read_text().splitlines()]
    strip_refusals = [ln for ln in lines if ln.get("reason") == "STRIP"]
    assert strip_refusals and strip_refusals[-1]["status"] == 422
    assert {2, 3, 4, 5} <= set(strip_refusals[-1]["rejected_rows"])
