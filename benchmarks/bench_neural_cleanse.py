"""Neural Cleanse over 5 BadNets and 5 clean MNIST models (5k/5k split, the small CNN, width 16, 4 epochs),
each pair from its own seed with its own target class (10% poison, 3x3 checkerboard patch): how many
backdoored models get their target flagged (anomaly index > 2) and how many clean models get no flag.
Goal (issue 18): at least 4 of 5 right on each side. The scan runs the threat's quick profile (150 steps a
class on 300 clean inputs, batch 32). ART's Neural Cleanse supports Keras only, so there is no peer here.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path


sys.path.insert(0, os.path.dirname(__file__))
from common import mnist_5k  # noqa: E402  (sets one torch thread)
from mlwarden.core.registry import all_threats  # noqa: E402
from mlwarden.core.target import TorchTarget  # noqa: E402
from mlwarden.core.threat import Context  # noqa: E402
from mlwarden.threats.corruption.backdoor import plant  # noqa: E402
from mlwarden.threats.corruption.triggers import Trigger  # noqa: E402


def main():
    data, recipe = mnist_5k()
    t = all_threats()["neural-cleanse"]
    right_bad = right_clean = 0
    print(f"{'seed':4} | {'target':6} | {'backdoored: flagged (index)':30} | {'clean: flagged (index)':26} | scan time")
    for seed, target in zip(range(1, 6), (3, 7, 1, 5, 8)):
        xb, yb, _ = plant(data.x_train, data.y_train, Trigger("patch", 0.0, 1.0), 0.1, "all-to-one", target, 10, seed)
        out = []
        for model in (recipe.fit(xb, yb, 10, seed=seed), recipe.fit(data.x_train, data.y_train, 10, seed=seed)):
            ctx = Context(target=TorchTarget(model, 10, data.input_shape), data=data, seed=seed,
                          evidence_dir=Path(__file__).resolve().parent / "out" / "evidence" / "nc")
            start = time.perf_counter()
            f = t.run(ctx, t.params_for("quick"))
            out.append((f.details["flagged"], f.metric("largest anomaly index").value, time.perf_counter() - start))
        right_bad += out[0][0] == [target]
        right_clean += out[1][0] == []
        print(f"{seed:4} | {target:6} | {str(out[0][0]) + f' ({out[0][1]:.2f})':30} | "
              f"{str(out[1][0]) + f' ({out[1][1]:.2f})':26} | {out[0][2]:.0f}s, {out[1][2]:.0f}s", flush=True)
    print(f"\nbackdoored models with their target flagged (and nothing else): {right_bad}/5; "
          f"clean models with no flag: {right_clean}/5")


if __name__ == "__main__":
    main()
