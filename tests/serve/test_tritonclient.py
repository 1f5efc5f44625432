"""A real Open Inference Protocol client, NVIDIA's tritonclient (HTTP), against `mlwarden serve` run as a user
runs it (a subprocess serving a scikit-learn model from .skops): every call it makes succeeds, its answers
equal the model's predict_proba to float32 precision, and errors reach it as readable messages."""
import numpy as np
import pytest

from ..cli.run import served

th = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is part of the test extra")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def skops_logreg(digits, tmp_path_factory):
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression
    clf = LogisticRegression(max_iter=2000).fit(digits.x_train.reshape(len(digits.x_train), -1).numpy(),
                                                 digits.y_train.numpy())
    path = tmp_path_factory.mktemp("triton") / "logreg.skops"
    sio.dump(clf, path)
    return clf, path


def _client(url):
    return th.InferenceServerClient(url.removeprefix("http://"))


def _inputs(x):
    i = th.InferInput("input", list(x.shape), "FP32")
    i.set_data_from_numpy(x, binary_data=False)
    return [i]


def test_every_tritonclient_call_succeeds_and_answers_match_predict_proba(skops_logreg, digits):
    clf, path = skops_logreg
    x = digits.x_test[:7].numpy()
    with served(path) as url:
        c = _client(url)
        assert c.is_server_live() and c.is_server_ready()
        meta = c.get_server_metadata()
        assert meta["name"] == "mlwarden" and meta["version"]
        assert c.is_model_ready("model") and c.is_model_ready("model", "1")
        m = c.get_model_metadata("model")
        assert m["platform"] == "mlwarden/sklearn"                      # the truth, not "pytorch"
        assert m["inputs"][0]["shape"] == [-1, 1, 8, 8] and m["outputs"][0]["name"] == "probabilities"
        out = th.InferRequestedOutput("probabilities", binary_data=False)
        r = c.infer("model", _inputs(x), outputs=[out])
        got = r.as_numpy("probabilities")
        want = clf.predict_proba(x.reshape(7, -1)).astype(np.float32)
        assert got.shape == (7, 10) and np.allclose(got, want, rtol=0, atol=1e-6)
        r = c.infer("model", _inputs(x), model_version="1")                # the /versions/{v} path
        assert np.allclose(r.as_numpy("probabilities"), want, atol=1e-6)
        with pytest.raises(th.InferenceServerException) as e:           # binary tensors: a clear 4xx
            i = th.InferInput("input", list(x.shape), "FP32")
            i.set_data_from_numpy(x, binary_data=True)
            c.infer("model", [i])
        assert e.value.status() == "415" and "binary tensor data is not supported" in e.value.message()
        with pytest.raises(th.InferenceServerException) as e:
            c.infer("nosuch", _inputs(x))
        assert e.value.status() == "404" and "is not served here" in e.value.message()
        with pytest.raises(th.InferenceServerException) as e:
            c.get_model_metadata("model", "7")
        assert e.value.status() == "404" and "version 1 only" in e.value.message()


def test_tritonclient_with_and_without_the_key(skops_logreg, digits):
    _, path = skops_logreg
    x = digits.x_test[:3].numpy()
    with served(path, "--api-key", "s3cret") as url:
        c = _client(url)
        auth = {"Authorization": "Bearer s3cret"}
        assert c.is_server_ready() and c.is_model_ready("model")        # health and readiness stay public
        assert c.get_model_metadata("model", headers=auth)["name"] == "model"
        assert c.infer("model", _inputs(x), headers=auth).as_numpy("probabilities").shape == (3, 10)
        with pytest.raises(th.InferenceServerException) as e:
            c.infer("model", _inputs(x))
        assert e.value.status() == "401" and "missing API key" in e.value.message()
        with pytest.raises(th.InferenceServerException) as e:
            c.get_model_metadata("model", headers={"Authorization": "Bearer wrong"})
        assert e.value.status() == "403" and "not accepted" in e.value.message()


def test_a_model_served_from_its_input_shape_with_keys_from_a_file_and_the_environment(tmp_path):
    """No --data: the shape comes from --input-shape (not the digits default), inputs are unbounded, and the
    keys come from --api-key-file and $MLWARDEN_API_KEYS, not the command line."""
    import skops.io as sio
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    x, y = load_iris(return_X_y=True)
    clf = LogisticRegression(max_iter=1000).fit(x, y)
    sio.dump(clf, tmp_path / "iris.skops")
    (tmp_path / "keys.txt").write_text("from-file\n")
    with served(tmp_path / "iris.skops", "--input-shape", "4", "--api-key-file", tmp_path / "keys.txt", data=None,
                env={"MLWARDEN_API_KEYS": "from-env"}) as url:
        c = _client(url)
        for key in ("from-file", "from-env"):
            auth = {"Authorization": f"Bearer {key}"}
            meta = c.get_model_metadata("model", headers=auth)
            assert meta["inputs"][0]["shape"] == [-1, 4] and meta["parameters"]["input_range"] is None
            got = c.infer("model", _inputs(x[:5].astype(np.float32)), headers=auth).as_numpy("probabilities")
            assert np.allclose(got, clf.predict_proba(x[:5].astype(np.float32)), atol=1e-6)
