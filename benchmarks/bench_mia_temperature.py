"""Which softmax temperature should the membership signal use? The membership-inference threat run on
one target with one set of cached reference models, at several temperatures, from the float32
probabilities a scores API gives and from the logits; pooled TPR at 1% and 0.1% FPR with intervals.

Targets: the MNIST 5k/5k MLP (the built-in mlp recipe, 40 epochs; 16 reference models on the 10k pool),
and the digits MLP at 40 epochs (the demo's recipe). Usage: bench_mia_temperature.py [n_reference]"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path


from common import mnist_5k  # sets one torch thread
from mlwarden.core.recipe import BUILTIN_RECIPES
from mlwarden.core.registry import all_threats
from mlwarden.core.target import TorchTarget
from mlwarden.core.threat import Context
from mlwarden.io.datasets import load_builtin

N_REF = int(sys.argv[1]) if len(sys.argv) > 1 else 16
SETTINGS = [(1.0, False), (1.0, True), (2.0, False), (2.0, True), (3.0, True)]


def run(data, recipe, model, **params):
    threat = all_threats()["membership-inference"]
    ctx = Context(target=TorchTarget(model, data.n_classes, data.input_shape, name="m"), data=data,
                  evidence_dir=Path(tempfile.mkdtemp()), recipe=recipe)
    return threat.run(ctx, threat.params_for("quick", dict(params, n_reference=N_REF,
                                                            attacks=["loss", "lira-online", "rmia-online"])))


def table(name, data, recipe):
    t0 = time.perf_counter()
    model = recipe.fit(data.x_train, data.y_train, data.n_classes, seed=0)
    print(f"\n## {name}: {len(data.x_train)} members / {len(data.x_test)} non-members, {N_REF} reference models "
          f"(target trained in {time.perf_counter() - t0:.0f}s)")
    print(f"{'signal':<22} | {'attack':<12} | {'AUC':>6} | {'TPR at 1% FPR [95% CI]':>26} | TPR at 0.1% FPR [95% CI]")
    for temperature, logits in SETTINGS:
        t0 = time.perf_counter()
        f = run(data, recipe, model, temperature=temperature, logits=logits)
        label = f"T={temperature:g} {'logits' if logits else 'float32'}"
        for attack in ("loss", "lira-online", "rmia-online"):
            auc = f.metric(f"{attack} AUC").value
            print(f"{label:<22} | {attack:<12} | {auc:6.3f} | {f.metric(f'{attack} TPR at 1% FPR').text():>26} | "
                  f"{f.metric(f'{attack} TPR at 0.1% FPR').text()}")
        print(f"{'':<22}   ({time.perf_counter() - t0:.0f}s, non-members pooled: "
              f"{f.details['table'][0]['n_nonmembers']})")


def main():
    mnist, _ = mnist_5k()
    table("MNIST MLP, 40 epochs", mnist, BUILTIN_RECIPES["mlp"])
    table("digits MLP, 40 epochs", load_builtin("digits", seed=0), BUILTIN_RECIPES["mlp"])


if __name__ == "__main__":
    main()
