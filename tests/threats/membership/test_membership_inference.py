"""Membership inference on real digits models: LiRA and RMIA beat LOSS on an overfitted model; DP-SGD at
small epsilon brings every attack close to chance; reference models are cached."""
import numpy as np
import pytest
import torch

from mlwarden.core.backend import LocalBackend
from mlwarden.core.recipe import BUILTIN_RECIPES
from mlwarden.core.registry import all_threats
from mlwarden.core.target import TorchTarget
from mlwarden.core.threat import Context
from mlwarden.defenses.dp_sgd import dp_recipe
from mlwarden.privacy.reference_models import balanced_masks, train_reference_models

OVERFIT = BUILTIN_RECIPES["mlp"].with_(epochs=80)


def _run(data, recipe, model, tmp_path, **params):
    threat = all_threats()["membership-inference"]
    ctx = Context(target=TorchTarget(model, 10, data.input_shape, name="m"), data=data,
                  evidence_dir=tmp_path / "evidence" / threat.name, recipe=recipe)
    return threat.run(ctx, threat.params_for("quick", params))


@pytest.fixture(scope="module")
def overfit_finding(digits, tmp_path_factory):
    model = OVERFIT.fit(digits.x_train, digits.y_train, 10, seed=0)
    return _run(digits, OVERFIT, model, tmp_path_factory.mktemp("mia"), n_reference=8)


def tpr1(f, attack):
    return f.metric(f"{attack} TPR at 1% FPR")


def test_lira_and_rmia_beat_loss_at_1pct_fpr(overfit_finding):
    f = overfit_finding
    loss = tpr1(f, "loss")
    for attack in ("lira-online", "rmia-online"):
        m = tpr1(f, attack)
        assert m.reliable and m.n > 5000
        assert m.ci_low > loss.ci_high, (attack, m.text(), loss.text())
    assert f.status.value == "ok" and f.severity.value in ("medium", "high")
    assert not any(c.fired for c in f.checks)
    assert (f.evidence and f.evidence[0].endswith("mia-roc.png"))
    table = {r["attack"]: r for r in f.details["table"]}
    assert table["lira-online"]["n_nonmembers"] > 5000  # pooled over 8 reference models


def test_dp_sgd_at_small_epsilon_brings_auc_close_to_half(digits, tmp_path):
    rec, _ = dp_recipe(BUILTIN_RECIPES["mlp"].with_(epochs=20, lr=1e-2, batch_size=128), digits.input_shape, 10,
                       len(digits.x_train), epsilon=1.0)
    model = rec.fit(digits.x_train, digits.y_train, 10, seed=0)
    f = _run(digits, rec, model, tmp_path, n_reference=4, attacks=["loss", "lira-online", "rmia-online"])
    for attack in ("loss", "lira-online", "rmia-online"):
        assert abs(f.metric(f"{attack} AUC").value - 0.5) < 0.03, attack
        assert f.metric(f"{attack} TPR at 1% FPR").ci_low < 0.03


def test_without_recipe_only_loss_runs(digits, digits_mlp, tmp_path):
    f = _run(digits, None, digits_mlp, tmp_path)
    assert [r["attack"] for r in f.details["table"]] == ["loss"]
    assert any("no recipe" in n for n in f.details["notes"])


def test_reference_models_are_balanced_and_cached(digits, tmp_path, monkeypatch):
    monkeypatch.setenv("MLWARDEN_CACHE", str(tmp_path / "cache"))   # its own: the first call must train
    masks = balanced_masks(6, 50, seed=1)
    assert (masks.sum(axis=0) == 3).all()
    x, y = digits.x_train[:200], digits.y_train[:200]
    rec = BUILTIN_RECIPES["logreg"].with_(epochs=3)
    first = train_reference_models(rec, x, y, 10, 4, 0, LocalBackend())
    again = train_reference_models(rec, x, y, 10, 4, 0, LocalBackend())
    assert first.trained == 4 and again.trained == 0
    for a, b in zip(first.models, again.models):
        assert torch.equal(a.net[1].weight, b.net[1].weight)
    assert np.array_equal(first.in_mask, again.in_mask)


@pytest.mark.slow
def test_the_default_signal_at_temperature_2_from_logits_beats_the_float32_softmax(digits, tmp_path):
    """A heavily overfit MLP (300 epochs) saturates the float32 softmax: at temperature 1 from float32
    probabilities (the old default signal) LOSS cannot tell confident members from confident non-members
    and RMIA loses power; the default, temperature 2 in float64 from the logits, wins at 1% FPR with
    disjoint pooled intervals."""
    recipe = BUILTIN_RECIPES["mlp"].with_(epochs=300)
    model = recipe.fit(digits.x_train, digits.y_train, 10, seed=0)
    old = _run(digits, recipe, model, tmp_path, n_reference=16, temperature=1.0, logits=False,
               attacks=["loss", "rmia-online"])
    new = _run(digits, recipe, model, tmp_path, n_reference=16, attacks=["loss", "rmia-online"])
    for attack in ("rmia-online", "loss"):
        print(f"{attack}: T=1 float32 {tpr1(old, attack).text()}; T=2 logits {tpr1(new, attack).text()}")
    assert tpr1(new, "rmia-online").ci_low > tpr1(old, "rmia-online").ci_high
    assert tpr1(new, "loss").ci_low > tpr1(old, "loss").ci_high
    assert "temperature 2 in float64, from the logits" in " ".join(new.details["notes"])
