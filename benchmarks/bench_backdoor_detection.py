"""Backdoor poison detection: mlwarden's spectral-signatures and activation-clustering filters against ART
1.20's SpectralSignatureDefense and ActivationDefence, in one run, on the same model and poison; then the
attack x detector table.

Data: the MNIST test split in ../shared/data (5k train / 5k test, stratified, seed 0). Model: the small CNN
(width 16, 4 epochs, Adam) trained on the poisoned training set, the same model for every detector.
Poison: BadNets 3x3 checkerboard patch, all-to-one (class 0), 5% of the training set (250 points).
Detection: TPR over the planted points, FPR over the clean points of class 0 and over all clean points,
and the detection time given the trained model (ours and ART's). ART's defaults: SpectralSignatureDefense
(expected_pp_poison 0.33, eps_multiplier 1.5), ActivationDefence (2 clusters, PCA to 10 dims, the smaller
cluster of every class); both read the activations of the model's last layer.
Table: for each trigger (patch, blend, warp) at 5%, without and with each of our detectors, the clean test
accuracy, the attack success and the accuracy on triggered inputs (robust accuracy), with 95% intervals.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import row  # noqa: E402,F401  (sets one torch thread)
from mlwarden.core.data import make_dataset  # noqa: E402
from mlwarden.core.finding import Metric  # noqa: E402
from mlwarden.core.recipe import BUILTIN_RECIPES  # noqa: E402
from mlwarden.core.zoo import SmallCNN  # noqa: E402
from mlwarden.defenses.activation_clustering import ClusterFilter  # noqa: E402
from mlwarden.defenses.spectral_signatures import SpectralFilter  # noqa: E402
from mlwarden.io.idx import read_idx  # noqa: E402
from mlwarden.threats.corruption.backdoor import attack_success, plant  # noqa: E402
from mlwarden.threats.corruption.triggers import Trigger  # noqa: E402

ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist-t10k"


def cnn16(shape, n):
    return SmallCNN(shape, n, width=16)


RECIPE = BUILTIN_RECIPES["cnn"].with_(name="cnn16", factory=cnn16, epochs=4)


def mnist():
    from sklearn.model_selection import train_test_split
    x = read_idx(ROOT / "t10k-images-idx3-ubyte.gz").astype(np.float32)[:, None] / 255.0
    y = read_idx(ROOT / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.5, random_state=0, stratify=y)
    return make_dataset("mnist", xtr, ytr, xte, yte, input_range=(0.0, 1.0), modality="image")


def rates(removed, planted, yb):
    clean0 = (yb == 0) & ~planted
    tpr = Metric.rate("tpr", int((removed & planted).sum()), int(planted.sum()))
    fpr0 = Metric.rate("fpr0", int((removed & clean0).sum()), int(clean0.sum()))
    fpr = Metric.rate("fpr", int((removed & ~planted).sum()), int((~planted).sum()))
    return tpr, fpr0, fpr


def art_detectors(model, xb, yb):
    from art.defences.detector.poison import ActivationDefence, SpectralSignatureDefense
    from art.estimators.classification import PyTorchClassifier
    clf = PyTorchClassifier(model, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=10,
                            clip_values=(0.0, 1.0))
    onehot = np.eye(10, dtype=np.float32)[yb.numpy()]
    out = {}
    t = time.perf_counter()
    _, clean = SpectralSignatureDefense(clf, xb.numpy(), onehot, batch_size=128).detect_poison()
    out["ART SpectralSignatureDefense"] = (torch.as_tensor(np.asarray(clean) == 0), time.perf_counter() - t)
    t = time.perf_counter()
    _, clean = ActivationDefence(clf, xb.numpy(), onehot).detect_poison(nb_clusters=2, nb_dims=10, reduce="PCA")
    out["ART ActivationDefence"] = (torch.as_tensor(np.asarray(clean) == 0), time.perf_counter() - t)
    return out


def main():
    data = mnist()
    print(f"MNIST 5k/5k; {RECIPE.name}, {RECIPE.epochs} epochs; BadNets 3x3 patch, all-to-one -> 0, 5% poison\n")
    trig = Trigger("patch", 0.0, 1.0, size=3)
    xb, yb, planted = plant(data.x_train, data.y_train, trig, 0.05, "all-to-one", 0, 10, 0)
    t = time.perf_counter()
    model = RECIPE.fit(xb, yb, 10, seed=0)
    print(f"poisoned model trained in {time.perf_counter() - t:.1f}s; attack success "
          f"{attack_success(model, data.x_test, data.y_test, trig, 'all-to-one', 0, 10).float().mean():.3f}\n")
    results = {}
    for name, F in (("mlwarden spectral-signatures", SpectralFilter), ("mlwarden activation-clustering", ClusterFilter)):
        t = time.perf_counter()
        keep = F(RECIPE, 10, 0, 0.25).detect(model, xb, yb)
        results[name] = (~keep, time.perf_counter() - t)
    results.update(art_detectors(model, xb, yb))
    print(f"{'detector':34} | {'TPR (planted removed)':26} | {'FPR, clean class-0 points':26} | "
          f"{'FPR, all clean points':26} | time")
    for name, (removed, secs) in results.items():
        tpr, fpr0, fpr = rates(removed, planted, yb)
        print(f"{name:34} | {tpr.text():26} | {fpr0.text():26} | {fpr.text():26} | {secs:.1f}s")
    for ours, art in (("mlwarden spectral-signatures", "ART SpectralSignatureDefense"),
                      ("mlwarden activation-clustering", "ART ActivationDefence")):
        print(f"time ratio {ours} / {art}: {results[ours][1] / results[art][1]:.2f}x")

    print("\nattack x detector (5% poison; each cell retrains the CNN on the data the detector kept)")
    print(f"{'trigger':8} | {'detector':22} | {'clean accuracy':28} | {'attack success':28} | "
          f"{'accuracy on triggered inputs':28} | planted removed")
    for kind in ("patch", "blend", "warp"):
        trig = Trigger(kind, 0.0, 1.0, size=3)
        xb, yb, planted = plant(data.x_train, data.y_train, trig, 0.05, "all-to-one", 0, 10, 0)
        model = RECIPE.fit(xb, yb, 10, seed=0)
        for det, F in (("none", None), ("spectral-signatures", SpectralFilter),
                       ("activation-clustering", ClusterFilter)):
            keep = torch.ones(len(yb), dtype=torch.bool) if F is None else F(RECIPE, 10, 0, 0.25).detect(model, xb, yb)
            m = model if F is None else RECIPE.fit(xb[keep], yb[keep], 10, seed=0)
            with torch.no_grad():
                ok = m(data.x_test).argmax(1) == data.y_test
                ok_t = m(trig(data.x_test)).argmax(1) == data.y_test
            hit = attack_success(m, data.x_test, data.y_test, trig, "all-to-one", 0, 10)
            found = Metric.rate("found", int((~keep & planted).sum()), int(planted.sum()))
            print(f"{kind:8} | {det:22} | {Metric.rate('a', int(ok.sum()), len(ok)).text():28} | "
                  f"{Metric.rate('s', int(hit.sum()), len(hit)).text():28} | "
                  f"{Metric.rate('r', int(ok_t.sum()), len(ok_t)).text():28} | {found.text()}", flush=True)


if __name__ == "__main__":
    main()
