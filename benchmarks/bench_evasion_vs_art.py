"""mlwarden vs ART 1.20 on the same digits models, points and settings: robust accuracy and time.

Goal (issue 2): robust accuracy no higher than ART's + 0.5 point; time at most 0.5x ART's for APGD,
Square and HopSkipJump.
"""
from __future__ import annotations

import numpy as np
import torch
from art.attacks.evasion import AutoProjectedGradientDescent, HopSkipJump, ProjectedGradientDescent, SquareAttack
from art.estimators.classification import PyTorchClassifier

from common import Float32, robust_acc, row, setup, timed
from mlwarden.core.target import Access, TorchTarget
from mlwarden.threats.tricking.apgd import apgd
from mlwarden.threats.tricking.hopskipjump import hop_skip_jump
from mlwarden.threats.tricking.pgd import pgd
from mlwarden.threats.tricking.square import square_linf

EPS = 0.1
N = 200
N_HSJ = 50


def art_clf(model):
    return PyTorchClassifier(Float32(model), loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 8, 8), nb_classes=10,
                             clip_values=(0.0, 1.0), device_type="cpu")


def main():
    data, models, x, y = setup(N)
    xn = x.numpy()
    print(f"digits test points n={N} (HopSkipJump n={N_HSJ}), Linf eps={EPS} on [0,1], one torch thread each")
    print(row(["model", "attack", "ours acc", "ART acc", "ours s", "ART s", "ratio"]))
    for name, m in models.items():
        clf = art_clf(m)
        cases = {
            "PGD-40": (lambda: pgd(m, x, y, EPS, "linf", 0, 1, steps=40, step_size=EPS / 4),
                       lambda: ProjectedGradientDescent(clf, norm=np.inf, eps=EPS, eps_step=EPS / 4, max_iter=40,
                                                        num_random_init=1, batch_size=N, verbose=False).generate(xn)),
            "APGD-CE-100": (lambda: apgd(m, x, y, EPS, "linf", 0, 1, steps=100, loss="ce"),
                            lambda: AutoProjectedGradientDescent(clf, norm=np.inf, eps=EPS, eps_step=2 * EPS,
                                                                 max_iter=100, nb_random_init=1, batch_size=N,
                                                                 loss_type="cross_entropy",
                                                                 verbose=False).generate(xn)),
            "Square-1000": (lambda: square_linf(TorchTarget(m, 10, (1, 8, 8), Access.SCORES).scores, x, y, EPS,
                                                0, 1, max_queries=1000, p_init=0.1)[0],
                            lambda: SquareAttack(clf, norm=np.inf, eps=EPS, max_iter=1000, p_init=0.1, nb_restarts=1,
                                                 batch_size=N, verbose=False).generate(xn)),
        }
        for attack, (ours, art) in cases.items():
            torch.manual_seed(0)
            np.random.seed(0)
            a, ta = timed(ours)
            b, tb = timed(art)
            print(row([name, attack, f"{robust_acc(m, a, y):.3f}", f"{robust_acc(m, b, y):.3f}", f"{ta:.2f}",
                       f"{tb:.2f}", f"{ta / tb:.2f}"]), flush=True)
        xs, ys = x[:N_HSJ], y[:N_HSJ]
        tgt = TorchTarget(m, 10, (1, 8, 8), Access.LABELS)
        (adv, found), ta = timed(lambda: hop_skip_jump(tgt.labels, xs, ys, 0, 1, norm="l2", max_iter=10,
                                                       init_evals=100, max_evals=1000))
        hsj = HopSkipJump(clf, targeted=False, norm=2, max_iter=10, max_eval=1000, init_eval=100, init_size=100,
                          batch_size=N_HSJ, verbose=False)
        b, tb = timed(lambda: hsj.generate(xs.numpy()))
        for eps2 in (0.5, 1.0):
            def acc_at(adv_x):
                adv_x = torch.as_tensor(adv_x)
                broken = (m(adv_x).argmax(1) != ys) & ((adv_x - xs).flatten(1).norm(dim=1) <= eps2 + 1e-6)
                return float((~broken & (m(xs).argmax(1) == ys)).float().mean())
            print(row([name, f"HSJ-10 L2<={eps2}", f"{acc_at(adv):.3f}", f"{acc_at(b):.3f}", f"{ta:.2f}",
                       f"{tb:.2f}", f"{ta / tb:.2f}"]), flush=True)
        print(row([name, "HSJ queries", f"{tgt.queries}", "", "", "", ""]))
        for eps2 in (0.5, 1.0):   # the audit's question: robust accuracy at eps; points broken within it stop
            q0 = tgt.queries
            torch.manual_seed(0)
            (adv2, _), ts_ = timed(lambda: hop_skip_jump(tgt.labels, xs, ys, 0, 1, norm="l2", max_iter=10,
                                                         init_evals=100, max_evals=1000, stop_at=eps2))
            print(row([name, f"HSJ-10 stop@{eps2}", f"{acc_at_eps(m, adv2, xs, ys, eps2):.3f}",
                       f"{acc_at_eps(m, b, xs, ys, eps2):.3f}", f"{ts_:.2f}", f"{tb:.2f}", f"{ts_ / tb:.2f}"]),
                  flush=True)
            print(row([name, f"  queries stop@{eps2}", f"{tgt.queries - q0}", "", "", "", ""]))


def acc_at_eps(m, adv_x, xs, ys, eps2):
    adv_x = torch.as_tensor(adv_x)
    with torch.no_grad():
        broken = (m(adv_x).argmax(1) != ys) & ((adv_x - xs).flatten(1).norm(dim=1) <= eps2 + 1e-6)
        return float((~broken & (m(xs).argmax(1) == ys)).float().mean())


if __name__ == "__main__":
    main()
