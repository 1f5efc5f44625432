"""Adversarial training: mlwarden against ART 1.20 on the same digits models and settings, in one run.

Part 1 (issue 13's goal: at least as robust as ART, at most 0.5x ART's time per epoch): the digits MLP,
same initial weights, Linf eps 0.1, batch 64, Adam lr 1e-3, the same number of epochs;
PGD-AT (10 steps of 0.025) against ART's AdversarialTrainerMadryPGD, TRADES (beta 6) against
AdversarialTrainerTRADESPyTorch (given ART's PGD as its attack; ART's TRADES maximises cross-entropy for
x', the paper maximises the KL term), fast AT against AdversarialTrainerFBFPyTorch (ART's schedules
its own cyclic learning rate). Every trained model is judged by mlwarden's cascade (APGD-CE, APGD-T,
Square, with the gradient-masking checks) on the whole test split.

Part 2: the trade-off table for the digits MLP and CNN: clean accuracy, cascade robust accuracy at eps
0.05 / 0.1 / 0.2 (models trained at eps 0.1), and training time relative to plain training, per method.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
import tempfile

import numpy as np
import torch

os.environ.setdefault("TQDM_DISABLE", "1")   # ART's progress bars

from common import row  # noqa: E402
from mlwarden.core.recipe import BUILTIN_RECIPES
from mlwarden.core.target import TorchTarget
from mlwarden.core.threat import Context
from mlwarden.defenses.adversarial_training import ATParams, at_recipe
from mlwarden.io.datasets import load_builtin
from mlwarden.threats.tricking.whitebox_cascade import WhiteBoxCascade

EPS = 0.1
EPOCHS = 30
TMP = Path(tempfile.mkdtemp())


def cascade(model, data, eps=EPS, n=None):
    ctx = Context(target=TorchTarget(model, 10, data.input_shape), data=data, evidence_dir=TMP / "ev" / "x")
    t = WhiteBoxCascade()
    p = t.params_for("quick", {"n_samples": n or len(data.x_test), "eps": eps})
    torch.manual_seed(0)
    f = t.run(ctx, p)
    fired = [c.name for c in f.checks if c.fired]
    rob = f.metric("robust_accuracy")
    return f.metric("clean_accuracy").value, rob, fired


def fmt(rob, fired):
    s = f"{100 * rob.value:.1f}% [{100 * rob.ci_low:.0f}-{100 * rob.ci_high:.0f}]"
    return s + (f" UNRELIABLE({','.join(fired)})" if fired else "")


def ours(data, method, epochs=EPOCHS, recipe="mlp", eps=EPS):
    rec, _ = at_recipe(BUILTIN_RECIPES[recipe], ATParams(method=method, eps=eps, epochs=epochs, lr=1e-3,
                                                         batch_size=64), data)
    t0 = time.perf_counter()
    model = rec.fit(data.x_train, data.y_train, 10, seed=0)
    return model, time.perf_counter() - t0


def art(data, method, epochs=EPOCHS):
    from art.attacks.evasion import ProjectedGradientDescent
    from art.defences.trainer import (AdversarialTrainerFBFPyTorch, AdversarialTrainerMadryPGD,
                                      AdversarialTrainerTRADESPyTorch)
    from art.estimators.classification import PyTorchClassifier
    torch.manual_seed(0)   # the same initial weights as ours (Recipe.fit seeds 0 before building the model)
    model = BUILTIN_RECIPES["mlp"].make_model(data.input_shape, 10)
    clf = PyTorchClassifier(model, loss=torch.nn.CrossEntropyLoss(), optimizer=torch.optim.Adam(model.parameters(), 1e-3),
                            input_shape=tuple(data.input_shape), nb_classes=10, clip_values=(0.0, 1.0),
                            device_type="cpu")
    x, y = data.x_train.numpy(), data.y_train.numpy()
    yo = np.eye(10, dtype=np.float32)[y]
    t0 = time.perf_counter()
    if method == "pgd":
        AdversarialTrainerMadryPGD(clf, nb_epochs=epochs, batch_size=64, eps=EPS, eps_step=EPS / 4, max_iter=10).fit(x, yo)
    elif method == "trades":
        attack = ProjectedGradientDescent(clf, eps=EPS, eps_step=EPS / 4, max_iter=10, verbose=False)
        AdversarialTrainerTRADESPyTorch(clf, attack, beta=6.0).fit(x, yo, nb_epochs=epochs, batch_size=64)
    else:
        AdversarialTrainerFBFPyTorch(clf, eps=EPS, use_amp=False).fit(x, yo, nb_epochs=epochs, batch_size=64)
    seconds = time.perf_counter() - t0
    return clf.model.eval(), seconds


def versus_art(data):
    print(f"Part 1: digits MLP, Linf eps {EPS}, {EPOCHS} epochs, batch 64, Adam 1e-3; cascade on all "
          f"{len(data.x_test)} test points; one torch thread")
    print(row(["method", "tool", "s/epoch", "clean", "cascade robust [95% CI]"], widths=(8, 9, 9, 8, 40)))
    for method in ("pgd", "trades", "fast"):
        res = {}
        for tool, fn in (("mlwarden", ours), ("ART", art)):
            model, seconds = fn(data, method)
            clean, rob, fired = cascade(model, data)
            res[tool] = seconds / EPOCHS
            print(row([method, tool, f"{seconds / EPOCHS:.3f}", f"{100 * clean:.1f}%", fmt(rob, fired)],
                      widths=(8, 9, 9, 8, 40)), flush=True)
        print(f"  time ratio mlwarden/ART: {res['mlwarden'] / res['ART']:.2f}x")


def tradeoff(data):
    print("\nPart 2: trade-off (models trained at Linf eps 0.1 with the defaults for each recipe; cascade "
          "robust accuracy at three eps; CNN on 200 test points, MLP on all)")
    print(row(["model", "method", "clean", "eps 0.05", "eps 0.1", "eps 0.2", "time x plain"],
              widths=(6, 8, 8, 24, 24, 24, 12)))
    for recipe in ("mlp", "cnn"):
        n = None if recipe == "mlp" else 200
        t0 = time.perf_counter()
        plain = BUILTIN_RECIPES[recipe].fit(data.x_train, data.y_train, 10, seed=0)
        base = time.perf_counter() - t0
        models = {"plain": (plain, base)}
        for method in ("pgd", "trades", "fast"):
            rec, _ = at_recipe(BUILTIN_RECIPES[recipe], ATParams(method=method, eps=EPS), data)
            t0 = time.perf_counter()
            models[method] = (rec.fit(data.x_train, data.y_train, 10, seed=0), time.perf_counter() - t0)
        for method, (model, seconds) in models.items():
            cells = []
            for eps in (0.05, 0.1, 0.2):
                clean, rob, fired = cascade(model, data, eps, n)
                cells.append(fmt(rob, fired))
            print(row([recipe, method, f"{100 * clean:.1f}%", *cells, f"{seconds / base:.1f}x ({seconds:.0f} s)"],
                      widths=(6, 8, 8, 24, 24, 24, 12)), flush=True)


def main():
    torch.set_num_threads(1)
    data = load_builtin("digits", seed=0)
    parts = sys.argv[1:] or ["art", "tradeoff"]
    if "art" in parts:
        versus_art(data)
    if "tradeoff" in parts:
        tradeoff(data)


if __name__ == "__main__":
    main()
