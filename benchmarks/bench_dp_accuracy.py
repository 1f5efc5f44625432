"""DP-SGD accuracy against epsilon: test accuracy of the digits MLP and CNN trained with DP-SGD (Opacus, through
mlwarden's recipe wrap; 20 epochs, lr 0.01, batch 128) at epsilon 1, 2, 4 and 8, beside the same networks
trained without DP. The cost of a DP-SGD step against a plain one is measured in bench_dp_modes.py (every
Opacus mode, with a correctness check); this file, formerly bench_dp_step_time.py, timed it too, by another
method, and its table disagreed with that one."""
from __future__ import annotations

import time
import warnings

import torch

torch.set_num_threads(1)
warnings.filterwarnings("ignore")

from mlwarden.core.recipe import BUILTIN_RECIPES  # noqa: E402
from mlwarden.defenses.dp_sgd import dp_recipe  # noqa: E402
from mlwarden.io.datasets import load_builtin  # noqa: E402


def main():
    data = load_builtin("digits", seed=0)
    print("accuracy against epsilon (delta = 1/(10 n); DP recipe: 20 epochs, lr 0.01, batch 128; n_test = 450)")
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
