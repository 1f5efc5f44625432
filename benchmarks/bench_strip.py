"""STRIP (Gao et al. 2019) against ART 1.20.1's STRIP on the 5 BadNets MNIST models of bench_neural_cleanse.py
(5k/5k split, the small CNN, width 16, 4 epochs; seeds 1-5, targets 3, 7, 1, 5, 8; 10% poison, 3x3 patch).

Both tools get the same 1,000 clean training images to calibrate on, 20 superimpositions per input and a
1% false-rejection target (ART calls the parameter false_acceptance_rate but uses it as the clean quantile),
and see the same 500 clean test inputs (FRR: rejected) and 500 triggered test inputs of the other classes
(FAR: accepted). Differences that are the tools' own: ART blends half and half and takes the entropy along
the draws axis (per class, over the 20 predictions) instead of per prediction, and fits a normal to the
calibration entropies; mlwarden superimposes by adding pixel values (the paper) and takes the empirical
quantile. Time: calibration plus the 1,000 test inputs, one torch thread each.
"""
from __future__ import annotations

import os
import sys

import time

os.environ.setdefault("TQDM_DISABLE", "1")  # ART's STRIP draws a progress bar per calibration

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import mnist_5k  # noqa: E402  (sets one torch thread)
from mlwarden.core.finding import Metric  # noqa: E402
from mlwarden.scans.strip import Strip  # noqa: E402
from mlwarden.threats.corruption.backdoor import plant  # noqa: E402
from mlwarden.threats.corruption.triggers import Trigger  # noqa: E402


def ours(model, clean, xc, xt):
    t0 = time.perf_counter()
    s = Strip.calibrate(model, clean, draws=20, frr=0.01)
    rc, _ = s.reject(xc)
    rt, _ = s.reject(xt)
    return rc.numpy(), ~rt.numpy(), time.perf_counter() - t0


def art(model, clean, xc, xt):
    from art.defences.transformer.poisoning import STRIP
    from art.estimators.classification import PyTorchClassifier
    np.random.seed(0)
    probs = torch.nn.Sequential(model, torch.nn.Softmax(dim=1))   # ART's STRIP takes the entropy of probabilities
    clf = PyTorchClassifier(probs, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=10,
                            clip_values=(0.0, 1.0))
    t0 = time.perf_counter()
    defended = STRIP(clf)(num_samples=20, false_acceptance_rate=0.01)
    defended.mitigate(clean.numpy())
    abstained_c = ~defended.predict(xc.numpy()).any(axis=1)     # an abstention is a row of zeros
    abstained_t = ~defended.predict(xt.numpy()).any(axis=1)
    return abstained_c, ~abstained_t, time.perf_counter() - t0


def main():
    data, recipe = mnist_5k()
    trig = Trigger("patch", 0.0, 1.0)
    g = torch.Generator().manual_seed(0)
    clean = data.x_train[torch.randperm(len(data.x_train), generator=g)[:1000]]
    xc = data.x_test[torch.randperm(len(data.x_test), generator=g)[:500]]
    print("tool     | seed | target | FRR (clean rejected)          | FAR (triggered accepted)       | time")
    totals = {"mlwarden": [0, 0, 0, 0, 0.0], "ART": [0, 0, 0, 0, 0.0]}
    for seed, target in zip(range(1, 6), (3, 7, 1, 5, 8)):
        xb, yb, _ = plant(data.x_train, data.y_train, trig, 0.1, "all-to-one", target, 10, seed)
        model = recipe.fit(xb, yb, 10, seed=seed)
        for p in model.parameters():
            p.requires_grad_(False)
        xt = trig(data.x_test[data.y_test != target][:500])
        for name, fn in (("mlwarden", ours), ("ART", art)):
            rej_c, acc_t, secs = fn(model, clean, xc, xt)
            frr = Metric.rate("FRR", int(rej_c.sum()), len(rej_c))
            far = Metric.rate("FAR", int(acc_t.sum()), len(acc_t))
            totals[name] = [a + b for a, b in zip(totals[name], (int(rej_c.sum()), len(rej_c), int(acc_t.sum()),
                                                                len(acc_t), secs))]
            print(f"{name:8} | {seed:4} | {target:6} | {frr.text():29} | {far.text():30} | {secs:.1f}s", flush=True)
    print()
    for name, (kc, nc, kt, nt, secs) in totals.items():
        print(f"{name:8} all 5 models: FRR {Metric.rate('FRR', kc, nc).text()}, FAR {Metric.rate('FAR', kt, nt).text()}, "
              f"{secs:.1f}s")
    print(f"time ratio mlwarden/ART: {totals['mlwarden'][4] / totals['ART'][4]:.2f}x")


if __name__ == "__main__":
    main()
