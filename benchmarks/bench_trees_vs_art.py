"""mlwarden's exact Kantchelian MILP (tree-milp) vs ART 1.20's tree-ensemble robustness verification (the clique
method of Chen et al. 2019, `RobustnessVerificationTreeModelsCliqueMethod`) on the same XGBoost models and points.

ART gives a lower bound on each point's minimal Linf adversarial eps (binary search over a relaxed clique
problem); the MILP gives the exact minimum, with an adversarial example the booster itself misclassifies.
Expected: ART's bound <= our exact eps at every point, and ART's verified robust accuracy at eps <= ours.
ART needs inputs in [0, 1], so the models are trained on breast cancer with every feature scaled to [0, 1].
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import xgboost as xgb
from art.estimators.classification import XGBoostClassifier
from art.metrics import RobustnessVerificationTreeModelsCliqueMethod
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

from common import row, timed
from mlwarden.io.boosters import BoosterScores
from mlwarden.threats.tricking.tree_milp import kantchelian_attack

N = 50
EPS = 0.05
# base_score 0.5 is a zero base margin: ART's tree reader (get_dump) drops the base margin, so with XGBoost's
# default (base_score estimated from the labels since XGBoost 2) ART verifies a different model than XGBoost runs
MODELS = {"10x d3": (10, 3, None), "10x d3 b0": (10, 3, 0.5), "30x d4 b0": (30, 4, 0.5)}


def main():
    x, y = load_breast_cancer(return_X_y=True)
    x = ((x - x.min(0)) / (x.max(0) - x.min(0))).astype(np.float32)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    print(f"breast cancer, features scaled to [0, 1]; the first {N} correctly classified test points; Linf; "
          f"robust accuracy at eps={EPS} among them")
    print(row(["model", "tool", "mean eps", "min eps", "robust@eps", "seconds", "ratio"],
              widths=(10, 16, 10, 10, 11, 9, 7)))
    for name, (trees, depth, base_score) in MODELS.items():
        model = xgb.XGBClassifier(n_estimators=trees, max_depth=depth, random_state=0, n_jobs=1,
                                  base_score=base_score).fit(xtr, ytr)
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "m.json"
            model.save_model(path)
            fn = BoosterScores(str(path), "xgboost", "m.json")
        ok = fn(xte).argmax(1) == yte
        px, py = xte[ok][:N], yte[ok][:N]
        ens = fn.ensemble(xte)
        res, ours_s = timed(lambda: kantchelian_attack(ens, px, py, 1.0, low=0.0, high=1.0, time_limit=60))
        exact = np.array([1.0 if r.eps is None else r.eps for r in res])   # None: robust on all of [0, 1]
        adv = np.stack([r.x_adv for r in res if r.x_adv is not None])
        fooled = (fn(adv).argmax(1) != py[[r.x_adv is not None for r in res]]).mean()
        art = RobustnessVerificationTreeModelsCliqueMethod(XGBoostClassifier(model=model,
                                                                             nb_features=x.shape[1], nb_classes=2),
                                                          verbose=False)
        (bound, verr), art_s = timed(lambda: art.verify(px, py, eps_init=EPS, nb_search_steps=10))
        art_bounds = []
        for i in range(len(px)):   # per point, to compare bound and exact eps point by point
            art_bounds.append(art.verify(px[i:i + 1], py[i:i + 1], eps_init=EPS, nb_search_steps=10)[0])
        art_bounds = np.array(art_bounds)
        over = art_bounds > exact + 1e-6
        worst = np.argsort(exact - art_bounds)[:3]
        print("  ART bound vs exact at the 3 most different points:",
              ", ".join(f"{art_bounds[i]:.5f} vs {exact[i]:.5f}" for i in worst))
        print(row([name, "mlwarden MILP", f"{exact.mean():.4f}", f"{exact.min():.4f}",
                   f"{(exact > EPS).mean():.3f}", f"{ours_s:.2f}", f"{ours_s / art_s:.2f}"], widths=(10, 16, 10, 10, 11, 9, 7)))
        print(row([name, "ART clique", f"{bound:.4f}", f"{art_bounds.min():.4f}", f"{1 - verr:.3f}", f"{art_s:.2f}", ""],
                  widths=(10, 16, 10, 10, 11, 9, 7)))
        print(f"  base margin {ens.base[0]:.4f}; {len(ens.trees)} trees, {ens.n_leaves} leaves; n={len(px)}; every MILP example misclassified by "
              f"XGBoost: {fooled == 1.0}; all optimal: {all(r.optimal for r in res)}; points where ART's bound > "
              f"exact eps (would be a bug in one of the two): {int(over.sum())}")


if __name__ == "__main__":
    main()
