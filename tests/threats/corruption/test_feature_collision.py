"""Clean-label feature collision (Poison Frogs / Bullseye Polytope) against a logistic-regression head
fine-tuned on the frozen features of the MNIST CNN, in the few-shot transfer setting (50 images a class)."""
from pathlib import Path

from mlwarden.core.registry import all_threats
from mlwarden.core.target import TorchTarget
from mlwarden.core.threat import Context


def test_five_poisons_within_the_bound_turn_most_targets(mnist, mnist_cnn, tmp_path):
    ctx = Context(target=TorchTarget(mnist_cnn, 10, mnist.input_shape), data=mnist,
                  evidence_dir=Path(tmp_path) / "e" / "fc")
    t = all_threats()["feature-collision"]
    assert t.skip_reason(ctx) is None
    f = t.run(ctx, t.params_for("standard", {"targets": 10, "poisons": 5, "eps": 0.3, "fine_tune_per_class": 50}))
    success = f.metric("targets turned to the base class")
    assert success.n == 10 and success.value >= 0.7, f.details["table"]
    assert f.metric("largest poison perturbation (Linf, share of the range)").value <= 0.3 + 1e-6
    clean, mean = f.metric("clean fine-tuned head: test accuracy"), f.metric("poisoned heads: mean test accuracy")
    assert clean.ci_low <= mean.value <= clean.ci_high, (clean.text(), mean.value)
    assert f.metric("poisons an independent clean model calls their base class").value >= 0.9


def test_a_tiny_bound_turns_no_target(mnist, mnist_cnn, tmp_path):
    """Control: the same attack with a tiny bound turns no target (the effect comes from the perturbation)."""
    ctx = Context(target=TorchTarget(mnist_cnn, 10, mnist.input_shape), data=mnist,
                  evidence_dir=Path(tmp_path) / "e" / "fc")
    t = all_threats()["feature-collision"]
    f = t.run(ctx, t.params_for("quick", {"targets": 5, "eps": 0.01, "fine_tune_per_class": 50}))
    assert f.metric("targets turned to the base class").value == 0, f.details["table"]
