"""Witches' Brew gradient matching against the digits MLP trained from scratch, at a 1% budget: the
poisoned victims move the targets towards the attacker's class, measured against the clean victim trained
from the same seed, and keep their clean accuracy."""
from pathlib import Path

import torch

from mlwarden.core.recipe import BUILTIN_RECIPES
from mlwarden.core.registry import all_threats
from mlwarden.core.target import TorchTarget
from mlwarden.core.threat import Context


def test_one_percent_of_matched_poisons_moves_targets_towards_the_attackers_class(digits, tmp_path):
    ctx = Context(target=TorchTarget(torch.nn.Linear(1, 1), 10, digits.input_shape), data=digits,
                  recipe=BUILTIN_RECIPES["mlp"], evidence_dir=Path(tmp_path) / "e" / "gm")
    t = all_threats()["gradient-matching"]
    assert t.skip_reason(ctx) is None
    f = t.run(ctx, t.params_for("standard", {"targets": 10, "budget": 0.01, "eps": 0.3}))
    moved = f.metric("mean change of the target's adversarial-class probability (poisoned - clean victim)")
    assert moved.n == 10 and moved.ci_low > 0, (moved, f.details["table"])
    assert all(r["poisons"] == 13 for r in f.details["table"])          # 1% of 1,347 training points
    clean, worst = f.metric("clean model: test accuracy"), f.metric("lowest poisoned-model test accuracy")
    assert worst.value >= clean.ci_low - 0.01, (clean.text(), worst.text())
    assert f.metric("targets turned to the adversarial class").n == 10
