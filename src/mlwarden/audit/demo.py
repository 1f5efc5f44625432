"""The built-in demo subject: a small CNN trained on scikit-learn's digits, cached after the first run."""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import torch

from ..core.recipe import BUILTIN_RECIPES
from ..core.target import TorchTarget
from ..io.datasets import load_builtin

DEMO_VERSION = "digits-cnn-v1"


def cache_dir() -> Path:
    return Path(os.environ.get("MLWARDEN_CACHE", Path.home() / ".cache" / "mlwarden"))


def demo_subject(seed: int = 0):
    """(target, data, recipe) for the demo. Weights are cached as a state_dict and read with weights_only."""
    data = load_builtin("digits", seed=seed)
    recipe = BUILTIN_RECIPES["cnn"]
    key = hashlib.sha256(f"{DEMO_VERSION}-{seed}-{torch.__version__}".encode()).hexdigest()[:12]
    path = cache_dir() / "demo" / f"{DEMO_VERSION}-{key}.pt"
    model = recipe.make_model(data.input_shape, data.n_classes)
    if path.exists():
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except Exception:  # noqa: BLE001 - a corrupt cache is rebuilt, not fatal
            path.unlink(missing_ok=True)
    if not path.exists():
        model = recipe.fit(data.x_train, data.y_train, data.n_classes, seed=seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, path)
    target = TorchTarget(model.eval(), data.n_classes, data.input_shape, name="demo digits CNN")
    return target, data, recipe
