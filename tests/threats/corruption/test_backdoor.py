"""Backdoors planted through training data (BadNets, blended, warp) on the MNIST 5k/5k split and digits,
the spectral-signature and activation-clustering detectors against them, and a backdoored pre-trained
model followed through transfer learning."""
from pathlib import Path

import pytest
import torch

from mlwarden.core.recipe import BUILTIN_RECIPES
from mlwarden.core.registry import all_threats, get_defense
from mlwarden.core.target import TorchTarget
from mlwarden.core.threat import Context
from mlwarden.threats.corruption.backdoor import plant
from mlwarden.threats.corruption.triggers import Trigger


def _run(name, data, recipe, tmp_path, defense=None, **params):
    if defense:
        d = get_defense(defense)
        recipe, _ = d.defend_recipe(recipe, d.params_for("standard", {}), data)
    model = torch.nn.Linear(1, 1)     # the threats train their own models through the recipe
    ctx = Context(target=TorchTarget(model, data.n_classes, data.input_shape), data=data, recipe=recipe,
                  evidence_dir=Path(tmp_path) / "evidence" / name)
    t = all_threats()[name]
    return t.run(ctx, t.params_for("quick", params))


def test_triggers_stamp_what_they_say():
    x = torch.rand(4, 1, 8, 8) * 0.5
    patched = Trigger("patch", 0.0, 1.0, size=3)(x)
    assert torch.equal(patched[:, :, :5], x[:, :, :5]) and torch.equal(patched[:, :, :, :5], x[:, :, :, :5])
    assert set(patched[:, :, -3:, -3:].unique().tolist()) == {0.0, 1.0}
    blended = Trigger("blend", 0.0, 1.0, alpha=0.2)(x)
    assert (blended - x).abs().max() <= 0.2 + 1e-6 and not torch.equal(blended, x)
    warped = Trigger("warp", 0.0, 1.0, strength=1.0)(x)
    assert warped.min() >= 0 and warped.max() <= 1 and (warped - x).abs().mean() > 0.01
    assert torch.equal(Trigger("warp", seed=3)(x), Trigger("warp", seed=3)(x))     # one fixed trigger
    y = torch.arange(40) % 10
    xb, yb, planted = plant(torch.rand(40, 1, 8, 8), y, Trigger("patch"), 0.25, "all-to-one", 0, 10, 0)
    assert int(planted.sum()) == 10 and (yb[planted] == 0).all() and (y[planted] != 0).all()


def test_badnets_patch_on_mnist_succeeds_and_keeps_clean_accuracy(mnist, mnist_recipe, tmp_path):
    f = _run("backdoor", mnist, mnist_recipe, tmp_path, rates=[0.05], headline_rate=0.05)
    asr = f.metric("patch 5%: attack success rate")
    clean, acc = f.metric("clean: test accuracy"), f.metric("patch 5%: clean test accuracy")
    assert asr.value >= 0.95 and asr.n > 4000, asr.text()
    assert clean.ci_low <= acc.value <= clean.ci_high, (clean.text(), acc.text())
    assert f.metric("patch: clean model sends triggered inputs to the goal (control)").value < 0.05
    # the defender's STRIP, calibrated to 1% false rejection, catches this plain patch
    assert f.metric("patch 5%: STRIP accepts triggered inputs (FAR)").ci_high < 0.1
    assert f.details["table"][0]["beats"] == "none"
    assert all((tmp_path / e).exists() for e in f.evidence)


@pytest.mark.parametrize("detector", ["spectral-signatures", "activation-clustering"])
def test_detectors_find_badnets_poison_and_retraining_removes_the_backdoor(detector, mnist, mnist_recipe, tmp_path):
    f = _run("backdoor", mnist, mnist_recipe, tmp_path, defense=detector, rates=[0.05], headline_rate=0.05,
             detectors=[])
    found = f.metric("patch 5%: planted points removed by the sanitizer")
    fpr = f.metric("patch 5%: clean points of class 0 removed by the sanitizer")
    asr = f.metric("patch 5%: attack success rate")
    assert found.value >= 0.9 and found.n == 250, found.text()
    assert fpr.value <= 0.10 and fpr.n > 400, fpr.text()
    assert asr.value < 0.10, asr.text()
    # on clean data the detector costs little: it removes few points
    assert f.metric("clean data: clean points removed by the sanitizer").value <= 0.05


def test_all_three_triggers_plant_a_backdoor_in_a_digits_mlp(digits, tmp_path):
    f = _run("backdoor", digits, BUILTIN_RECIPES["mlp"], tmp_path, triggers=["patch", "blend", "warp"], rates=[0.1],
             headline_rate=0.1)
    for kind in ("patch", "blend", "warp"):
        assert f.metric(f"{kind} 10%: attack success rate").ci_low >= 0.8, f.metric(f"{kind} 10%: attack success rate")
    assert len(f.details["table"]) == 3 and f.severity.value == "critical"


def test_all_to_all_backdoor_sends_each_class_to_the_next(digits, tmp_path):
    f = _run("backdoor", digits, BUILTIN_RECIPES["mlp"], tmp_path, modes=["all-to-all"], rates=[0.1],
             headline_rate=0.1)
    asr = f.metric("patch 10%: attack success rate")
    assert asr.n == len(digits.y_test) and asr.ci_low > 0.5, asr.text()


def test_backdoor_survives_transfer_on_frozen_features_beyond_the_clean_control(digits, tmp_path):
    f = _run("backdoor-transfer", digits, BUILTIN_RECIPES["cnn"], tmp_path)
    rows = {(r["fine-tuning"], r["pre-trained model"]): r for r in f.details["table"]}
    assert len(rows) == 4
    assert f.metric("pre-trained backdoored model: attack success on its own task").value >= 0.9

    def interval(row):
        lo, hi = row["trigger's effect (points, 95% CI)"].split("(")[1].rstrip(")").split(" to ")
        return float(lo), float(hi)
    bad = interval(rows[("new head on frozen features", "backdoored")])
    control = interval(rows[("new head on frozen features", "clean")])
    assert bad[1] < control[0], (bad, control)          # the trigger hurts the backdoored lineage more
    for method in ("new head on frozen features", "full fine-tuning"):
        assert f.metric(f"{'frozen' if 'frozen' in method else 'full'}, clean pre-trained: new-task accuracy").value > 0.6


def test_backdoor_threats_need_the_recipe(digits, digits_mlp, tmp_path):
    ctx = Context(target=TorchTarget(digits_mlp, 10, digits.input_shape), data=digits, evidence_dir=tmp_path)
    for name in ("backdoor", "backdoor-transfer"):
        assert "needs training access" in all_threats()[name].skip_reason(ctx)
