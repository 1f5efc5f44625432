"""Model extraction, side by side in one run.

1. Equation solving against the query counts of Tramer et al. 2016 (c(d+1) unknowns solved per model)
   on the scikit-learn data sets: digits (softmax, d=64, c=10), iris (softmax, d=4, c=3), breast cancer
   (binary, d=30), with exact scores and with scores rounded to 2 decimals.
2. mlwarden Knockoff against ART 1.20.1 KnockoffNets (random strategy) and CopycatCNN on the same
   digits CNN, the same query budgets, the same population data (the train split), the same copy
   architecture and epochs. Agreement with the victim on the test split."""
from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)
warnings.filterwarnings("ignore")

from mlwarden.core.recipe import BUILTIN_RECIPES  # noqa: E402
from mlwarden.core.registry import all_threats  # noqa: E402
from mlwarden.core.target import TorchTarget  # noqa: E402
from mlwarden.core.threat import Context  # noqa: E402
from mlwarden.io.datasets import load_builtin  # noqa: E402


class Rounded(TorchTarget):
    def _scores(self, x):
        return torch.round(super()._scores(x) * 100) / 100


def run_threat(name, target, data, params, recipe=None):
    t = all_threats()[name]
    ctx = Context(target=target, data=data, evidence_dir=Path(tempfile.mkdtemp()) / "evidence" / name, recipe=recipe)
    t0 = time.perf_counter()
    f = t.run(ctx, t.params_for("quick", params))
    return f, time.perf_counter() - t0


def equation_solving_table():
    print("equation solving (Tramer et al. 2016 solve c(d+1) unknowns; mlwarden solves d+1 log-ratios)")
    print(f"{'data':<14} | {'d':>3} | {'c':>2} | {'Tramer c(d+1)':>13} | {'answers':<10} | {'ours q':>6} | "
          f"{'1-R_test':>9} | {'1-R_unif':>9} | time")
    for name in ("digits", "iris", "breast-cancer"):
        data = load_builtin(name, seed=0)
        model = BUILTIN_RECIPES["logreg"].fit(data.x_train, data.y_train, data.n_classes, seed=0)
        d, c = int(np.prod(data.input_shape)), data.n_classes
        for label, cls in (("exact", TorchTarget), ("rounded 2", Rounded)):
            f, s = run_threat("extract-equation-solving", cls(model, c, data.input_shape), data, {})
            print(f"{name:<14} | {d:>3} | {c:>2} | {c * (d + 1):>13} | {label:<10} | {f.queries:>6} | "
                  f"{f.metrics[0].value:9.4f} | {f.metrics[1].value:9.4f} | {s:.2f}s")


def knockoff_vs_art():
    from art.attacks.extraction import CopycatCNN, KnockoffNets
    from art.estimators.classification import PyTorchClassifier
    data = load_builtin("digits", seed=0)
    cnn = BUILTIN_RECIPES["cnn"].with_(epochs=15).fit(data.x_train, data.y_train, 10, seed=0)
    victim = PyTorchClassifier(cnn, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 8, 8), nb_classes=10,
                               clip_values=(0.0, 1.0))
    x_pop = data.x_train.numpy()
    epochs = 60

    def thief():
        torch.manual_seed(0)
        m = BUILTIN_RECIPES["cnn"].make_model((1, 8, 8), 10)
        return PyTorchClassifier(m, loss=torch.nn.CrossEntropyLoss(), optimizer=torch.optim.Adam(m.parameters(), 1e-3),
                                 input_shape=(1, 8, 8), nb_classes=10, clip_values=(0.0, 1.0))

    def agree(pred_fn):
        with torch.no_grad():
            return float((pred_fn(data.x_test).argmax(1) == cnn(data.x_test).argmax(1)).float().mean())

    print(f"\nKnockoff vs ART on the digits CNN (victim test accuracy "
          f"{float((cnn(data.x_test).argmax(1) == data.y_test).float().mean()):.3f}); copy = same CNN, {epochs} epochs")
    print(f"{'budget':>6} | {'tool':<34} | {'test agreement':>14} | time")
    for budget in (500, 1000):
        f, s = run_threat("extract-knockoff", TorchTarget(cnn, 10, (1, 8, 8)), data,
                          {"budget": budget, "epochs": epochs}, BUILTIN_RECIPES["cnn"])
        print(f"{budget:>6} | {'mlwarden extract-knockoff (probs)':<34} | {f.metrics[0].value:14.4f} | {s:.1f}s")
        for label, attack in (
            ("ART KnockoffNets random (probs)", KnockoffNets(victim, batch_size_fit=64, batch_size_query=64,
                                                             nb_epochs=epochs, nb_stolen=budget, use_probability=True,
                                                             verbose=False)),
            ("ART KnockoffNets random (labels)", KnockoffNets(victim, batch_size_fit=64, batch_size_query=64,
                                                              nb_epochs=epochs, nb_stolen=budget, use_probability=False,
                                                              verbose=False)),
            ("ART CopycatCNN (labels)", CopycatCNN(victim, batch_size_fit=64, batch_size_query=64, nb_epochs=epochs,
                                                   nb_stolen=budget)),
        ):
            t0 = time.perf_counter()
            stolen = attack.extract(x_pop, thieved_classifier=thief())
            s = time.perf_counter() - t0
            print(f"{budget:>6} | {label:<34} | {agree(lambda x: torch.from_numpy(stolen.predict(x.numpy()))):14.4f} | "
                  f"{s:.1f}s")


if __name__ == "__main__":
    equation_solving_table()
    knockoff_vs_art()
