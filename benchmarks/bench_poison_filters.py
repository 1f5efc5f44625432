"""The attack x filter table for training-data poisoning: label flipping (random, targeted, and adaptive to
the outlier filters, Koh, Steinhardt & Liang 2018) at 30%, against no filter, k-NN label sanitization
(Paudice et al. 2018) and the sphere and slab outlier filters (Steinhardt, Koh & Liang 2017), on the digits
MLP (the `mlp` recipe, seed 0; targeted and adaptive flip 30% of the 3s to 8). Each cell retrains the
model through the defended recipe; reported: test accuracy (and the 3s' recall for targeted flips), the
planted points the filter removed or relabelled, the clean points it removed or changed.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import row  # noqa: E402,F401  (sets one torch thread)
import mlwarden.defenses  # noqa: E402,F401  (registers the defences)
from mlwarden.core.recipe import BUILTIN_RECIPES  # noqa: E402
from mlwarden.core.registry import all_threats, get_defense  # noqa: E402
from mlwarden.core.target import TorchTarget  # noqa: E402
from mlwarden.core.threat import Context  # noqa: E402
from mlwarden.io.datasets import load_builtin  # noqa: E402

FILTERS = [("none", None, {}), ("k-NN sanitization", "knn-label-sanitization", {}),
           ("sphere, 20%", "outlier-filter", {"rule": "sphere", "remove": 0.2}),
           ("slab, 20%", "outlier-filter", {"rule": "slab", "remove": 0.2})]


def main():
    data = load_builtin("digits", seed=0)
    t = all_threats()["label-flipping"]
    print("digits MLP, 30% label flips; targeted and adaptive: 3 -> 8 (30% of the 3s)")
    print(f"{'attack':9} | {'filter':18} | {'test accuracy':30} | {'recall of 3s':30} | {'planted caught':30} | "
          "clean removed or changed")
    for strategy in ("random", "targeted", "adaptive"):
        for label, name, params in FILTERS:
            recipe = BUILTIN_RECIPES["mlp"]
            if name:
                d = get_defense(name)
                recipe, _ = d.defend_recipe(recipe, d.params_for("standard", params), data)
            ctx = Context(target=TorchTarget(torch.nn.Linear(1, 1), 10, data.input_shape), data=data, recipe=recipe,
                          evidence_dir=Path(__file__).resolve().parent / "out" / "evidence" / "filters")
            f = t.run(ctx, t.params_for("quick", {"budgets": [0.3], "headline_budget": 0.3, "strategies": [strategy],
                                                  "source": 3, "target": 8}))
            tag = f"{strategy} 30%"
            acc = f.metric(f"{tag}: test accuracy").text()
            rec = f.metric(f"{tag}: recall of class 3").text() if strategy != "random" else "-"
            caught = next((m.text() for m in f.metrics if m.name.startswith(tag) and
                           ("planted points removed" in m.name or "planted labels restored" in m.name)), "-")
            clean = next((m.text() for m in f.metrics if m.name.startswith(tag) and
                          ("clean points removed" in m.name or "clean labels changed" in m.name)), "-")
            print(f"{strategy:9} | {label:18} | {acc:30} | {rec:30} | {caught:30} | {clean}", flush=True)


if __name__ == "__main__":
    main()
