"""DP-SGD: every Opacus per-sample-gradient mode against plain training, through mlwarden's recipe wrap.

For the digits MLP and CNN at batch 64 and 256, one torch thread: milliseconds per step with the batches
already in memory (compute only) and with the loader (Poisson sampling for DP), and seconds per epoch
(one pass of the loader), for plain training and for DP-SGD with grad_sample_mode hooks, functorch, ew
(expanded weights) and ghost (fast gradient clipping). Correctness: from one initialisation, one SGD step
(lr 1, no noise) on the same 64 points must give every mode the same clipped gradient as hooks (the
reference implementation of per-sample clipping); the largest difference is printed.
Usage: bench_dp_modes.py"""
from __future__ import annotations

import copy
import time
import warnings

import torch

torch.set_num_threads(1)
warnings.filterwarnings("ignore")

from mlwarden.core.recipe import BUILTIN_RECIPES  # noqa: E402
from mlwarden.defenses.dp_sgd import dp_recipe  # noqa: E402
from mlwarden.io.datasets import load_builtin  # noqa: E402

MODES = ("hooks", "functorch", "ew", "ghost")


def parts(recipe, data, mode, noise=None, init=None):
    x, y = data.x_train, data.y_train
    model = copy.deepcopy(init) if init is not None else recipe.make_model(data.input_shape, 10)
    opt = recipe.make_optimizer(model.parameters())
    loader = recipe.make_loader(x, y, 0)
    loss_fn = torch.nn.CrossEntropyLoss()
    if mode is not None:
        rec, _ = dp_recipe(recipe, data.input_shape, 10, len(x), 8.0)
        rec.wrap.mode = mode
        if noise is not None:
            rec.wrap.noise_multiplier = noise
        out = rec.wrap(model, opt, loader)
        model, opt, loader = out[:3]
        loss_fn = out[3] if len(out) == 4 else loss_fn
    return model.train(), opt, loader, loss_fn


def step(model, opt, loss_fn, xb, yb):
    opt.zero_grad(set_to_none=True)
    loss_fn(model(xb), yb).backward()
    opt.step()


def timings(recipe, data, mode, steps=40):
    model, opt, loader, loss_fn = parts(recipe, data, mode)
    batches = []
    while len(batches) < steps + 5:
        batches += [(xb, yb) for xb, yb in loader if len(xb)]
    batches = batches[:steps + 5]
    for xb, yb in batches[:5]:
        step(model, opt, loss_fn, xb, yb)
    t = time.perf_counter()
    for xb, yb in batches[5:]:
        step(model, opt, loss_fn, xb, yb)
    compute = (time.perf_counter() - t) / steps
    t, n = time.perf_counter(), 0
    for xb, yb in loader:                         # one epoch, loading included
        if len(xb):
            step(model, opt, loss_fn, xb, yb)
        n += 1
    epoch = time.perf_counter() - t
    return compute, epoch / max(n, 1), epoch


def clipped_step(recipe, data, mode, init, xb, yb):
    model, opt, _, loss_fn = parts(recipe.with_(optimizer="sgd", lr=1.0), data, mode, noise=0.0, init=init)
    before = [p.detach().clone() for p in model.parameters()]
    step(model, opt, loss_fn, xb, yb)
    return [b - p.detach() for b, p in zip(before, model.parameters())]


def main():
    data = load_builtin("digits", seed=0)
    print("digits, one torch thread; ms per step (compute only | with loading), s per epoch; ratio to plain "
          "(with loading)")
    print(f"{'model':<4} | {'batch':>5} | {'mode':<9} | {'step ms':>8} | {'+load ms':>8} | {'epoch s':>7} | "
          f"{'ratio':>6} | max |grad - hooks|")
    for name in ("mlp", "cnn"):
        for bs in (64, 256):
            r = BUILTIN_RECIPES[name].with_(batch_size=bs)
            init = r.make_model(data.input_shape, 10)
            xb, yb = data.x_train[:64], data.y_train[:64]
            ref = clipped_step(r, data, "hooks", init, xb, yb)
            plain = timings(r, data, None)
            print(f"{name:<4} | {bs:>5} | {'plain':<9} | {1e3 * plain[0]:8.2f} | {1e3 * plain[1]:8.2f} | "
                  f"{plain[2]:7.2f} | {1.0:6.2f} |")
            for mode in MODES:
                try:
                    t = timings(r, data, mode)
                    g = clipped_step(r, data, mode, init, xb, yb)
                    diff = max(float((a - b).abs().max()) for a, b in zip(g, ref))
                    print(f"{name:<4} | {bs:>5} | {mode:<9} | {1e3 * t[0]:8.2f} | {1e3 * t[1]:8.2f} | {t[2]:7.2f} | "
                          f"{t[1] / plain[1]:6.2f} | {diff:.1e}")
                except Exception as e:  # noqa: BLE001 - a mode Opacus refuses for this model is a row, not a crash
                    print(f"{name:<4} | {bs:>5} | {mode:<9} | failed: {type(e).__name__}: {str(e)[:80]}")


if __name__ == "__main__":
    main()
