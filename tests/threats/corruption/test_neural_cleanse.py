"""Neural Cleanse on MNIST (5k/5k, the small CNN): it flags the target class of a BadNets model (10% poison,
target 3) and no class of its clean twin (same recipe and seed, clean data)."""
from pathlib import Path

import pytest

from mlwarden.core.registry import all_threats
from mlwarden.core.target import TorchTarget
from mlwarden.core.threat import Context
from mlwarden.threats.corruption.backdoor import plant
from mlwarden.threats.corruption.triggers import Trigger


@pytest.fixture(scope="module")
def badnets_cnn(mnist, mnist_recipe):
    x, y, _ = plant(mnist.x_train, mnist.y_train, Trigger("patch", 0.0, 1.0, size=3), 0.1, "all-to-one", 3, 10, 0)
    return mnist_recipe.fit(x, y, 10, seed=0)


def _scan(model, data, tmp_path):
    ctx = Context(target=TorchTarget(model, 10, data.input_shape), data=data, evidence_dir=Path(tmp_path) / "e" / "nc")
    t = all_threats()["neural-cleanse"]
    return t.run(ctx, t.params_for("quick"))


def test_neural_cleanse_flags_the_badnets_target_and_not_the_clean_twin(mnist, badnets_cnn, mnist_cnn, tmp_path):
    bad = _scan(badnets_cnn, mnist, tmp_path / "bad")
    assert bad.details["flagged"] == [3], bad.details["table"]
    assert bad.metric("largest anomaly index").value > 2 and bad.severity.value == "high"
    assert bad.metric("class 3: smallest trigger (mask L1)").value < 10       # a 3x3 patch is 9 pixels
    assert (tmp_path / "bad" / bad.evidence[0]).exists()
    clean = _scan(mnist_cnn, mnist, tmp_path / "clean")
    assert clean.details["flagged"] == [], clean.details["table"]
    assert clean.metric("largest anomaly index").value <= 2 and clean.severity.value == "info"
