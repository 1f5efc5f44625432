"""Shared set-up for the benchmarks: the same digits data, models and evaluation points for every tool."""
from __future__ import annotations

import time

import torch

torch.set_num_threads(1)  # both tools get one intra-op thread: fastest for these models on 2 cores

from mlwarden.core.recipe import BUILTIN_RECIPES  # noqa: E402
from mlwarden.io.datasets import load_builtin  # noqa: E402
from mlwarden.threats.tricking.common import eval_points  # noqa: E402


def setup(n: int = 200):
    data = load_builtin("digits", seed=0)
    models = {}
    for name, epochs in (("mlp", 40), ("cnn", 15)):
        m = BUILTIN_RECIPES[name].with_(epochs=epochs).fit(data.x_train, data.y_train, 10, seed=0)
        for p in m.parameters():
            p.requires_grad_(False)
        models[name] = m.eval()
    x, y = eval_points(data, n, 0)
    return data, models, x, y


def robust_acc(model, x_adv, y) -> float:
    with torch.no_grad():
        return float((model(torch.as_tensor(x_adv)).argmax(1) == y).float().mean())


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def row(cells, widths=(8, 14, 11, 11, 10, 10, 8)):
    return " | ".join(str(c).ljust(w) for c, w in zip(cells, widths))


class Float32(torch.nn.Module):
    """ART feeds float64 arrays (its smoothing adds float64 noise); the models are float32."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x.float())


def mnist_5k():
    """The MNIST test split of ../shared/data as 5k train / 5k test, stratified, seed 0 (the tests' split), and
    the tests' recipe for it: the small CNN at width 16, 4 epochs."""
    from pathlib import Path

    import numpy as np
    from sklearn.model_selection import train_test_split

    from mlwarden.core.data import make_dataset
    from mlwarden.io.idx import read_idx
    root = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist-t10k"
    x = read_idx(root / "t10k-images-idx3-ubyte.gz").astype(np.float32)[:, None] / 255.0
    y = read_idx(root / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.5, random_state=0, stratify=y)
    data = make_dataset("mnist", xtr, ytr, xte, yte, input_range=(0.0, 1.0), modality="image")
    return data, BUILTIN_RECIPES["cnn"].with_(factory=cnn16, epochs=4)


def cnn16(shape, n):
    from mlwarden.core.zoo import SmallCNN
    return SmallCNN(shape, n, width=16)


def purchase_like(n: int = 15_000, d: int = 600, k: int = 100, density: float = 0.2, flip: float = 0.35,
                  seed: int = 0):
    """A Purchase-100-shaped table generated here (Shokri et al. 2017's Purchase-100: 600 binary "bought it"
    features, 100 classes from clustering the shoppers): k random binary prototypes of `density`, each record
    one of them with every bit flipped with probability `flip`, labelled by its nearest prototype (Hamming),
    as the data set's labels are its clusters. At flip 0.35 the tabular-mlp recipe fits 5,000 records to 100%
    and scores 72% on 5,000 others: a model that overfits as Purchase-100's do. Returns float32 x, int64 y."""
    import numpy as np
    rng = np.random.default_rng(seed)
    protos = rng.random((k, d)) < density
    x = protos[rng.integers(0, k, n)] ^ (rng.random((n, d)) < flip)
    y = np.concatenate([(x[i:i + 1000, None, :] != protos[None]).sum(-1).argmin(1) for i in range(0, n, 1000)])
    return x.astype(np.float32), y.astype(np.int64)
