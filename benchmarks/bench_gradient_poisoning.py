"""Gradient poisoning of a linear SVM: mlwarden's implicit-gradient attack (gradient-poisoning) against ART
1.20's PoisoningAttackSVM (Biggio et al. 2012), in one run, on the same victim and budgets.

Victim: scikit-learn SVC(kernel="linear", C=1) on breast-cancer (min-max scaled to [0, 1], the 426/143
split of the audit, seed 0), retrained on the training set plus the poisons. Budgets: the numbers of
poisons given as arguments (default 5; ART needs about 90 s a poison on this machine). Both attacks start from the same training points with the other label; ART's validation set is
the same 142 of the attacker's points as ours (a third of the training set). Reported: the victim's test
error after retraining (higher = stronger attack) and the time each attack took; ratios ours / ART.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import row  # noqa: E402,F401  (sets one torch thread)
from mlwarden.io.datasets import load_builtin  # noqa: E402
from mlwarden.threats.corruption.gradient_poisoning import biggio_poisons  # noqa: E402


def error(x, y, xp, yp, x_test, y_test):
    from sklearn.svm import SVC
    clf = SVC(kernel="linear", C=1.0).fit(np.vstack([x, xp]), np.concatenate([y, yp]).astype(int))
    return float((clf.predict(x_test) != y_test).mean())


def main():
    from art.attacks.poisoning import PoisoningAttackSVM
    from art.estimators.classification import SklearnClassifier
    from sklearn.svm import SVC
    d = load_builtin("breast-cancer")
    x, y = d.x_train.numpy().astype(np.float64), d.y_train.numpy()
    xt, yt = d.x_test.numpy().astype(np.float64), d.y_test.numpy()
    val = np.random.default_rng(0).permutation(len(x))[:len(x) // 3]
    clean = error(x, y, x[:0], y[:0], xt, yt)
    print(f"victim: SVC(kernel='linear', C=1), breast-cancer; clean test error {100 * clean:.1f}% (n={len(yt)})\n")
    print("| poisons | mlwarden test error | ART test error | mlwarden s | ART s | time ratio |")
    print("|---|---|---|---|---|---|")
    for n in BUDGETS:
        start = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:n].numpy()
        t = time.perf_counter()
        xp, yp = biggio_poisons(torch.from_numpy(x), torch.from_numpy(y).double(), torch.from_numpy(x[val]),
                                torch.from_numpy(y[val]).double(), n, 1.0, 60, 0.05, 0.0, 1.0, 0)
        ours_s = time.perf_counter() - t
        ours = error(x, y, xp.numpy(), yp.numpy(), xt, yt)
        clf = SklearnClassifier(SVC(kernel="linear", C=1.0, probability=True), clip_values=(0.0, 1.0))
        clf.fit(x, np.eye(2)[y])
        art = PoisoningAttackSVM(clf, step=0.05, eps=1.0, x_train=x, y_train=np.eye(2)[y], x_val=x[val],
                                 y_val=np.eye(2)[y[val]], max_iter=60, verbose=False)
        t = time.perf_counter()
        xa, ya = art.poison(x[start].copy(), y=np.eye(2)[1 - y[start]])
        art_s = time.perf_counter() - t
        theirs = error(x, y, xa, np.argmax(ya, 1), xt, yt)
        print(f"| {n} | {100 * ours:.1f}% | {100 * theirs:.1f}% | {ours_s:.1f} | {art_s:.1f} | **{ours_s / art_s:.2f}** |")


BUDGETS = [int(a) for a in sys.argv[1:]] or [5]   # ART needs about 90 s a poison here: 10 and 20 take 15 and 30 min


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
