"""Membership inference: mlwarden's LiRA and RMIA against ART's black-box membership inference attack,
on the same target model and the same evaluation examples, in one run.

Data: the MNIST test split from ../shared/data (10,000 images), split 5,000 members / 5,000 non-members.
Target: an MLP trained on the members (the built-in mlp recipe). ART's MembershipInferenceBlackBox
trains its attack model on half of the members and half of the non-members (its documented usage);
every tool is then scored on the other halves (2,500 members, 2,500 non-members). mlwarden trains its
reference models on random halves of all 10,000 images (the attacker's population data)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)

from mlwarden.core.backend import LocalBackend  # noqa: E402
from mlwarden.core.recipe import BUILTIN_RECIPES  # noqa: E402
from mlwarden.io.idx import read_idx  # noqa: E402
from mlwarden.privacy.reference_models import train_reference_models  # noqa: E402
from mlwarden.privacy.roc import summarize  # noqa: E402
from mlwarden.privacy.signals import log_probs, logit_confidence  # noqa: E402
from mlwarden.threats.membership import lira, loss_attack, rmia  # noqa: E402
from mlwarden.threats.membership.common import AttackInput  # noqa: E402

N_REF = int(sys.argv[1]) if len(sys.argv) > 1 else 16
ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist-t10k"


def load():
    x = read_idx(ROOT / "t10k-images-idx3-ubyte.gz").astype(np.float32) / 255.0
    y = read_idx(ROOT / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(x))
    return torch.from_numpy(x[perm]).unsqueeze(1), torch.from_numpy(y[perm])


def fmt(s, f):
    k, n = s.tpr_at[f]
    from mlwarden.core.stats import clopper_pearson
    lo, hi = clopper_pearson(k, n)
    return f"{100 * k / n:5.2f}% [{100 * lo:.2f}-{100 * hi:.2f}]"


def main():
    x, y = load()
    n = len(x)
    members = np.zeros(n, bool)
    members[: n // 2] = True
    recipe = BUILTIN_RECIPES["mlp"]
    t0 = time.perf_counter()
    target = recipe.fit(x[members], y[members], 10, seed=0)
    print(f"target MLP trained on {members.sum()} MNIST images in {time.perf_counter() - t0:.1f}s; "
          f"train acc {(target(x[members]).argmax(1) == y[members]).float().mean():.3f}, "
          f"test acc {(target(x[~members]).argmax(1) == y[~members]).float().mean():.3f}")
    # evaluation halves: the second half of the members and of the non-members
    idx_m, idx_n = np.flatnonzero(members), np.flatnonzero(~members)
    fit_idx = np.r_[idx_m[: len(idx_m) // 2], idx_n[: len(idx_n) // 2]]
    eval_idx = np.r_[idx_m[len(idx_m) // 2:], idx_n[len(idx_n) // 2:]]
    is_member = members[eval_idx]

    # --- ART ---------------------------------------------------------------------------------
    from art.attacks.inference.membership_inference import MembershipInferenceBlackBox
    from art.estimators.classification import PyTorchClassifier
    clf = PyTorchClassifier(target, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=10,
                            clip_values=(0.0, 1.0))
    art_rows = {}
    for kind in ("rf", "nn"):
        t0 = time.perf_counter()
        att = MembershipInferenceBlackBox(clf, attack_model_type=kind)
        fm, fn = idx_m[: len(idx_m) // 2], idx_n[: len(idx_n) // 2]
        att.fit(x[fm].numpy(), y[fm].numpy(), x[fn].numpy(), y[fn].numpy())
        p = att.infer(x[eval_idx].numpy(), y[eval_idx].numpy(), probabilities=True)
        p = np.asarray(p).reshape(len(eval_idx), -1)[:, -1]
        art_rows[f"ART black-box ({kind})"] = (summarize(p, is_member), time.perf_counter() - t0)

    # --- mlwarden ------------------------------------------------------------------------------
    t0 = time.perf_counter()
    refs = train_reference_models(recipe, x, y, 10, N_REF, 0, LocalBackend())
    t_ref = time.perf_counter() - t0
    xs = x[eval_idx]
    ys = y[eval_idx].numpy()
    lp_t = log_probs(target, xs)
    lp_r = np.stack([log_probs(m, xs) for m in refs.models])
    a = AttackInput(lp_t, logit_confidence(lp_t, ys), lp_r, logit_confidence(lp_r, ys), refs.in_mask[:, eval_idx], ys)
    ours = {"mlwarden LOSS": loss_attack.score(a), "mlwarden LiRA online": lira.score(a, True),
            "mlwarden LiRA offline": lira.score(a, False), "mlwarden RMIA online": rmia.score(a, True),
            "mlwarden RMIA offline": rmia.score(a, False)}
    rows = dict(art_rows)
    for k, s in ours.items():
        rows[k] = (summarize(s, is_member), None)
    print(f"\nevaluated on {is_member.sum()} members / {(~is_member).sum()} non-members; "
          f"mlwarden reference models: {N_REF} MLPs trained in {t_ref:.1f}s ({refs.trained} trained now)")
    print(f"{'attack':<24} | {'AUC':>6} | {'TPR at 1% FPR [95% CI]':>24} | {'TPR at 0.1% FPR [95% CI]':>24} | time")
    for name, (s, t) in rows.items():
        print(f"{name:<24} | {s.auc:6.3f} | {fmt(s, 0.01):>24} | {fmt(s, 0.001):>24} | "
              f"{(f'{t:.1f}s' if t is not None else '-')}")
    best_art = max(rows[k][0].tpr_at[0.001][0] for k in art_rows)
    for k in ("mlwarden LiRA online", "mlwarden RMIA online"):
        ours_k = rows[k][0].tpr_at[0.001][0]
        ratio = ours_k / best_art if best_art else float("inf")
        print(f"{k} TPR at 0.1% FPR / best ART: {ratio:.1f}x  (goal >= 3x)")


if __name__ == "__main__":
    main()
