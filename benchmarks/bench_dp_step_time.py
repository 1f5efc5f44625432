"""DP-SGD cost: the time of one DP-SGD training step (Opacus, through mlwarden's recipe wrap) divided by
the time of one plain step, on the digits MLP and CNN, at the same batch size; and test accuracy
against epsilon (1, 2, 4, 8). Opacus's own MNIST example reports about 1.6x on CPU for a larger model."""
from __future__ import annotations

import time
import warnings

import torch

torch.set_num_threads(1)
warnings.filterwarnings("ignore")

from mlwarden.core.recipe import BUILTIN_RECIPES  # noqa: E402
from mlwarden.defenses.dp_sgd import dp_recipe  # noqa: E402
from mlwarden.io.datasets import load_builtin  # noqa: E402


def step_time(recipe, data, steps=60, mode=None, epsilon=8.0):
    """Seconds per optimizer step over `steps` steps after 5 warm-up steps (loader time included)."""
    x, y = data.x_train, data.y_train
    model = recipe.make_model(data.input_shape, 10)
    opt = recipe.make_optimizer(model.parameters())
    loader = recipe.make_loader(x, y, 0)
    loss_fn = torch.nn.CrossEntropyLoss()
    if mode is not None:
        rec, _ = dp_recipe(recipe, data.input_shape, 10, len(x), epsilon)
        rec.wrap.mode = mode
        out = rec.wrap(model, opt, loader)
        model, opt, loader = out[:3]
        loss_fn = out[3] if len(out) == 4 else loss_fn
    model.train()
    done, t0 = 0, None
    while done < steps + 5:
        for xb, yb in loader:
            if done == 5:
                t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss_fn(model(xb), yb).backward()
            opt.step()
            done += 1
            if done == steps + 5:
                break
    return (time.perf_counter() - t0) / steps


def main():
    data = load_builtin("digits", seed=0)
    print("step time, digits, one thread (ms per step; ratio = DP / plain)")
    print(f"{'model':<5} | {'batch':>5} | {'plain':>7} | {'DP ghost':>9} | {'ratio':>6} | {'DP hooks':>9} | {'ratio':>6}")
    for name in ("mlp", "cnn"):
        for bs in (64, 256):
            r = BUILTIN_RECIPES[name].with_(batch_size=bs)
            plain = step_time(r, data)
            ghost = step_time(r, data, mode="ghost")
            hooks = step_time(r, data, mode="hooks")
            print(f"{name:<5} | {bs:>5} | {1e3 * plain:7.2f} | {1e3 * ghost:9.2f} | {ghost / plain:6.2f} | "
                  f"{1e3 * hooks:9.2f} | {hooks / plain:6.2f}")
    print("\naccuracy against epsilon (delta = 1/(10 n); DP recipe: 20 epochs, lr 0.01, batch 128; n_test = 450)")
    print(f"{'model':<5} | {'plain':>6} | " + " | ".join(f"eps={e:<3g}" for e in (1, 2, 4, 8)) + " | DP train s (eps=8)")
    for name in ("mlp", "cnn"):
        base = BUILTIN_RECIPES[name]
        plain_m = base.fit(data.x_train, data.y_train, 10, seed=0)
        accs, secs = [], 0.0
        for eps in (1, 2, 4, 8):
            rec, _ = dp_recipe(base.with_(epochs=20, lr=1e-2, batch_size=128), data.input_shape, 10,
                               len(data.x_train), eps)
            t0 = time.perf_counter()
            m = rec.fit(data.x_train, data.y_train, 10, seed=0)
            secs = time.perf_counter() - t0
            accs.append(float((m(data.x_test).argmax(1) == data.y_test).float().mean()))
        pa = float((plain_m(data.x_test).argmax(1) == data.y_test).float().mean())
        print(f"{name:<5} | {pa:6.3f} | " + " | ".join(f"{a:7.3f}" for a in accs) + f" | {secs:.1f}")


if __name__ == "__main__":
    main()
