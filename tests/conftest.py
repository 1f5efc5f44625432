"""Shared fixtures: real digits data and small real models trained once per test session."""
from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(1)  # tiny models on 2 cores: one intra-op thread is many times faster


@pytest.fixture(scope="session")
def digits():
    from mlwarden.io.datasets import load_builtin
    return load_builtin("digits", seed=0)


def _fit(name, data, **kw):
    from mlwarden.core.recipe import BUILTIN_RECIPES
    return BUILTIN_RECIPES[name].with_(**kw).fit(data.x_train, data.y_train, data.n_classes, seed=0)


@pytest.fixture(scope="session")
def digits_mlp(digits):
    return _fit("mlp", digits)


@pytest.fixture(scope="session")
def digits_cnn(digits):
    return _fit("cnn", digits, epochs=15)


@pytest.fixture(scope="session")
def mnist():
    """The MNIST test split in ../shared/data, 5k train / 5k test, stratified, seed 0 (where intervals need the
    size)."""
    import pathlib

    import numpy as np
    from sklearn.model_selection import train_test_split

    from mlwarden.core.data import make_dataset
    from mlwarden.io.idx import read_idx
    root = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist-t10k"
    x = read_idx(root / "t10k-images-idx3-ubyte.gz").astype(np.float32)[:, None] / 255.0
    y = read_idx(root / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.5, random_state=0, stratify=y)
    return make_dataset("mnist-t10k 5k/5k", xtr, ytr, xte, yte, input_range=(0.0, 1.0), modality="image")


@pytest.fixture(scope="session")
def mnist_recipe():
    """A small CNN (width 16) for MNIST: 4 epochs reach about 95% on the 5k/5k split in about 12 s."""
    from mlwarden.core.recipe import BUILTIN_RECIPES
    return BUILTIN_RECIPES["cnn"].with_(name="cnn16", factory=small_cnn16, epochs=4)


@pytest.fixture(scope="session")
def mnist_cnn(mnist, mnist_recipe):
    return mnist_recipe.fit(mnist.x_train, mnist.y_train, 10, seed=0)


@pytest.fixture(scope="session")
def badnets_trigger():
    from mlwarden.threats.corruption.triggers import Trigger
    return Trigger("patch", 0.0, 1.0, size=3)


@pytest.fixture(scope="session")
def badnets_cnn(mnist, mnist_recipe, badnets_trigger):
    """The small CNN trained on MNIST with 10% BadNets poison (3x3 checkerboard patch, all-to-one, target 3):
    the backdoored twin of `mnist_cnn` (same recipe and seed)."""
    from mlwarden.threats.corruption.backdoor import plant
    x, y, _ = plant(mnist.x_train, mnist.y_train, badnets_trigger, 0.1, "all-to-one", 3, 10, 0)
    return mnist_recipe.fit(x, y, 10, seed=0)


@pytest.fixture(scope="session")
def digits_onnx(digits, tmp_path_factory):
    """(path, classifier): softmax regression fitted by scikit-learn on digits, written as an ONNX graph
    (MatMul + Add of its weights)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper
    from sklearn.linear_model import LogisticRegression
    clf = LogisticRegression(max_iter=500).fit(digits.x_train.flatten(1).numpy(), digits.y_train.numpy())
    w = helper.make_tensor("W", TensorProto.FLOAT, [64, 10], clf.coef_.T.astype(np.float32).ravel())
    b = helper.make_tensor("B", TensorProto.FLOAT, [10], clf.intercept_.astype(np.float32))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["z"]), helper.make_node("Add", ["z", "B"], ["logits"])], "lr",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 10])], [w, b])
    path = tmp_path_factory.mktemp("onnx") / "lr.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path, clf


def small_cnn16(input_shape, n_classes):
    from mlwarden.core.zoo import SmallCNN
    return SmallCNN(input_shape, n_classes, width=16)


@pytest.fixture(scope="session")
def mlp_state_dict(tmp_path_factory, digits_mlp):
    path = tmp_path_factory.mktemp("models") / "mlp.pt"
    torch.save(digits_mlp.state_dict(), path)
    return path


def shared_cache(tmp_path_factory):
    """The run's one cache folder: under pytest-xdist, the workers' common base folder, so a reference model or
    demo weights one worker trains are read by the other (the cache writes atomically and keys by content)."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "cache"


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory):
    """The same cache for session- and module-scoped fixtures as for tests (never the real ~/.cache): a run
    directory a fixture makes is proven by a key in this cache's run-keys/, which a test's run must find."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLWARDEN_CACHE", str(shared_cache(tmp_path_factory)))
        yield


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("MLWARDEN_CACHE", str(shared_cache(tmp_path_factory)))
    yield


def clean_env():
    env = dict(os.environ)
    env["COLUMNS"] = "200"
    return env


SHARED_SMS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "sms-spam", "SMSSpamCollection")


def place_sms_spam(cache) -> None:
    """Fill a cache folder with the SMS Spam Collection from ../shared (what `--data sms-spam` reads)."""
    import shutil
    from pathlib import Path
    dest = Path(cache) / "data" / "sms-spam" / "SMSSpamCollection"
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.exists():   # copied whole, then renamed: the other worker never reads half of it
        tmp = dest.with_name(f"{dest.name}.{os.getpid()}.tmp")
        shutil.copyfile(SHARED_SMS, tmp)
        os.replace(tmp, dest)


@pytest.fixture(scope="session")
def sms_spam(tmp_path_factory):
    """The SMS Spam Collection, 70/30 stratified split, seed 0, read through `--data sms-spam`'s cache."""
    cache = shared_cache(tmp_path_factory)
    place_sms_spam(cache)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLWARDEN_CACHE", str(cache))
        from mlwarden.io.datasets import load_data
        return load_data("sms-spam", test_fraction=0.3, seed=0)


# Modules whose tests train MNIST-size models or many reference models, start Ray or Flower, or run the CLI
# end to end (measured with `--durations`: each over about 15 s of test time). `make test-fast` (-m "not slow") leaves them out; CI runs
# everything.
SLOW_MODULES = {
    "cli", "interop", "contract", "threats/corruption/test_backdoor.py", "threats/corruption/test_backdoor_removal.py",
    "threats/corruption/test_feature_collision.py", "threats/corruption/test_gradient_matching.py",
    "threats/corruption/test_strip.py", "threats/memorization/test_secret_sharer.py",
    "threats/membership/test_membership_inference.py", "threats/tricking/test_blackbox_attacks.py",
    "federated/test_flower.py", "federated/test_malicious_clients.py", "core/test_backends.py",
    "serve/test_encrypted.py", "security/test_generated_corpus.py", "security/test_hostile_files.py",
    "defenses/test_randomized_smoothing.py", "defenses/test_trigger_defences.py",
    "defenses/test_adversarial_training.py", "defenses/test_preprocessing.py", "test_api.py",
    "threats/corruption/test_spam_poisoning.py", "threats/corruption/test_label_flipping.py",
    "threats/membership/test_label_only.py", "threats/membership/test_lm_membership.py",
    "core/test_plugins_and_layers.py", "serve/test_strip_guard.py", "serve/test_extraction_over_http.py",
    "serve/test_detector_and_watermark.py", "io/test_arch_models.py"}


def pytest_collection_modifyitems(config, items):
    import pathlib
    root = pathlib.Path(__file__).parent
    for item in items:
        rel = pathlib.Path(str(item.path)).relative_to(root).as_posix()
        if rel in SLOW_MODULES or rel.split("/", 1)[0] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
