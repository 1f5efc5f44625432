"""Randomized smoothing and input preprocessing: mlwarden against ART 1.20 on the same digits MLP, in one run.

Part 1: certification (Cohen et al. 2019) of the same noise-trained MLP (sigma 0.25), n0 = 100 and
n = 10,000 draws, alpha 0.001, the same 200 test points: certified accuracy at L2 radius 0 / 0.25 / 0.5
and time per point, mlwarden's `certify` against ART's PyTorchRandomizedSmoothing.certify.

Part 2: each preprocessing defence in front of the plain MLP: clean accuracy, robust accuracy at Linf
eps 0.1 under each tool's adaptive attack (mlwarden: the audit's cascade through the BPDA or end-to-end
module; ART: PGD-40 through its preprocessor's estimate_gradient, which is BPDA for these), the
oblivious number (PGD on the classifier alone), and the serving cost per 1,000 rows.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("TQDM_DISABLE", "1")

from common import Float32, row  # noqa: E402
from mlwarden.core.defense import DefenseContext  # noqa: E402
from mlwarden.core.recipe import BUILTIN_RECIPES  # noqa: E402
from mlwarden.core.registry import get_defense  # noqa: E402
from mlwarden.core.target import TorchTarget  # noqa: E402
from mlwarden.core.threat import Context  # noqa: E402
from mlwarden.defenses.preprocessing import oblivious  # noqa: E402
from mlwarden.defenses.randomized_smoothing import GaussianNoise, certify, predict  # noqa: E402
from mlwarden.io.datasets import load_builtin  # noqa: E402
from mlwarden.threats.tricking.common import eval_points  # noqa: E402
from mlwarden.threats.tricking.pgd import pgd  # noqa: E402
from mlwarden.threats.tricking.whitebox_cascade import WhiteBoxCascade  # noqa: E402

EPS, SIGMA, N, N0, ALPHA, POINTS = 0.1, 0.25, 10000, 100, 0.001, 200
TMP = Path(tempfile.mkdtemp())


def art_clf(model, data, prep=None, cls=None, **kw):
    from art.estimators.classification import PyTorchClassifier
    cls = cls or PyTorchClassifier
    return cls(Float32(model), loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(data.input_shape), nb_classes=10,
               clip_values=(0.0, 1.0), preprocessing_defences=prep, device_type="cpu", **kw)


def certification(data):
    from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing
    base = BUILTIN_RECIPES["mlp"].with_(epochs=100, batch_transform=GaussianNoise(SIGMA)).fit(data.x_train, data.y_train, 10, seed=0)
    for q in base.parameters():
        q.requires_grad_(False)
    x, y = eval_points(data, POINTS, 0)
    print(f"Part 1: certification, noise-trained digits MLP, sigma {SIGMA}, n0 {N0}, n {N}, alpha {ALPHA}, "
          f"{POINTS} test points, one torch thread")
    print(row(["tool", "s/point", "cert r=0", "cert r=0.25", "cert r=0.5"], widths=(9, 9, 10, 11, 10)))
    torch.manual_seed(0)
    t0 = time.perf_counter()
    labels, radii = certify(base, x, SIGMA, N0, N, 10, ALPHA)
    ours = time.perf_counter() - t0
    acc = [float(((labels == y) & (radii >= r)).float().mean()) for r in (0, 0.25, 0.5)]
    print(row(["mlwarden", f"{ours / POINTS:.4f}", *[f"{100 * a:.1f}%" for a in acc]], widths=(9, 9, 10, 11, 10)))
    rs = art_clf(base, data, cls=PyTorchRandomizedSmoothing, sample_size=N0, scale=SIGMA, alpha=ALPHA)
    t0 = time.perf_counter()
    pred, rad = rs.certify(x.numpy(), n=N, batch_size=1000)
    art = time.perf_counter() - t0
    acc = [float(((torch.as_tensor(pred) == y) & (torch.as_tensor(rad) >= r)).float().mean()) for r in (0, 0.25, 0.5)]
    print(row(["ART", f"{art / POINTS:.4f}", *[f"{100 * a:.1f}%" for a in acc]], widths=(9, 9, 10, 11, 10)))
    print(f"  time ratio mlwarden/ART: {ours / art:.2f}x")
    t0 = time.perf_counter()
    predict(base, data.x_test[:100], SIGMA, 1000, 10, ALPHA)
    print(f"  serving the smoothed classifier (PREDICT, 1,000 draws): {1e3 * (time.perf_counter() - t0) / 100:.1f} ms "
          f"per row")


def preprocessing(data):
    from art.attacks.evasion import ProjectedGradientDescent
    from art.defences.preprocessor import FeatureSqueezing, JpegCompression, SpatialSmoothing
    model = BUILTIN_RECIPES["mlp"].fit(data.x_train, data.y_train, 10, seed=0)
    for q in model.parameters():
        q.requires_grad_(False)
    plain = TorchTarget(model, 10, data.input_shape, name="mlp")
    x, y = eval_points(data, POINTS, 0)
    cases = {
        "none": (None, {}, None),
        "1-bit squeeze": ("feature-squeezing", {"bits": 1}, FeatureSqueezing((0.0, 1.0), bit_depth=1)),
        "median 3x3": ("feature-squeezing", {"bits": 0, "median": 3},
                       SpatialSmoothing(window_size=3, channels_first=True, clip_values=(0.0, 1.0))),
        "JPEG q50": ("jpeg", {"quality": 50}, JpegCompression((0.0, 1.0), quality=50, channels_first=True)),
        "denoiser": ("denoiser", {}, None),
    }
    print(f"\nPart 2: preprocessing in front of the plain digits MLP, Linf eps {EPS}, {POINTS} test points; "
          "robust accuracy under the adaptive attack (BPDA or end to end), seconds in brackets")
    w = (14, 7, 10, 20, 18, 24, 10)
    print(row(["defence", "clean", "oblivious", "ours: cascade", "ours: PGD-40", "ART: PGD-40", "ms/1k rows"],
              widths=w))
    ctx = DefenseContext(data, TMP)
    for label, (name, params, art_prep) in cases.items():
        if name is None:
            defended = plain
        else:
            d = get_defense(name)
            defended, _ = d.defend_target(plain, d.params_for("quick", {"eps": EPS, **params}), ctx)
        module = defended.module
        with torch.no_grad():
            clean = float((module(x).argmax(1) == y).float().mean())
            t0 = time.perf_counter()
            for _ in range(10):
                module(data.x_test[:100])
            serve_ms = 1e3 * (time.perf_counter() - t0)
        ob = oblivious(model, module, data, EPS, POINTS, 0)["oblivious_robust_accuracy"]
        c = Context(target=defended, data=data, evidence_dir=TMP / "ev" / label.replace(" ", "_"))
        t = WhiteBoxCascade()
        torch.manual_seed(0)
        t0 = time.perf_counter()
        f = t.run(c, t.params_for("quick", {"n_samples": POINTS, "eps": EPS}))
        cascade_s = time.perf_counter() - t0
        fired = [k.name for k in f.checks if k.fired]
        cascade = f"{100 * f.metric('robust_accuracy').value:.1f}% ({cascade_s:.1f})" + \
            (f" UNREL({','.join(fired)})" if fired else "")
        torch.manual_seed(0)
        t0 = time.perf_counter()
        adv = pgd(module, x, y, EPS, "linf", 0.0, 1.0, steps=40, step_size=EPS / 4)
        pgd_s = time.perf_counter() - t0
        with torch.no_grad():
            ours_pgd = f"{100 * float((module(adv).argmax(1) == y).float().mean()):.1f}% ({pgd_s:.2f})"
        if art_prep is not None or name is None:
            clf = art_clf(model, data, [art_prep] if art_prep is not None else None)
            t0 = time.perf_counter()
            adv = ProjectedGradientDescent(clf, eps=EPS, eps_step=EPS / 4, max_iter=40, num_random_init=1,
                                           batch_size=POINTS, verbose=False).generate(x.numpy())
            art_s = time.perf_counter() - t0
            art = f"{100 * float((clf.predict(adv).argmax(1) == y.numpy()).mean()):.1f}% ({art_s:.2f})"
        else:
            art = "n/a (no such preprocessor)"
        print(row([label, f"{100 * clean:.1f}%", f"{100 * ob:.1f}%", cascade, ours_pgd, art, f"{serve_ms:.2f}"],
                  widths=w), flush=True)


def main():
    torch.set_num_threads(1)
    data = load_builtin("digits", seed=0)
    certification(data)
    preprocessing(data)


if __name__ == "__main__":
    main()
