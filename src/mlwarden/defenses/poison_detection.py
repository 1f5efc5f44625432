"""What the poison detectors that look at a model's learned representation share (spectral signatures,
activation clustering): train the model through the recipe on the data as given, take each training
point's penultimate activations (the input of the last linear layer), split each class in two, and remove
the smaller part when the rest of the data does not recognise it as its class (Chen et al.'s exclusionary
reclassification, here by k nearest neighbours in input space among the points outside every candidate
part, which needs no retraining). Poison that carries one trigger and one label forms such a part (Tran et
al. 2018; Chen et al. 2018) and, being other classes' inputs, is recognised as those; a class with no
poison splits along its own variety, which its remaining points still recognise. Two limits the report states: input-specific triggers and weakly learned ones leave no
separate part, and poison that outnumbers the clean points of its class makes the clean part the smaller
one."""
from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field

from ..core.layers import penultimate
from ..core.threat import Params
from .sanitizer import Sanitizer, SanitizerDefense, flat

NEIGHBOURS = 5   # k of the exclusionary k-NN reclassification


def activations(model, x: torch.Tensor, batch: int = 128) -> torch.Tensor:
    """Penultimate activations scaled to unit length: the direction, not the size, of a representation
    tells poison from clean (on BadNets MNIST the top singular direction of a class ranks its poison with an
    AUC of 0.99 on unit vectors against 0.95 on raw ones)."""
    features = penultimate(model)
    with torch.no_grad():
        z = torch.cat([features(x[i:i + batch]) for i in range(0, len(x), batch)]).double()
    return z / z.norm(dim=1, keepdim=True).clamp_min(1e-12)


def knn_predict(x_ref: torch.Tensor, y_ref: torch.Tensor, x: torch.Tensor, k: int, chunk: int = 1024,
                skip_self: bool = False) -> torch.Tensor:
    """Majority label of each point's k nearest reference points (Euclidean, flattened inputs); with
    `skip_self` the points are in the reference set and their nearest (themselves) is left out."""
    ref = flat(x_ref)
    out = []
    for i in range(0, len(x), chunk):
        d = torch.cdist(flat(x[i:i + chunk]), ref)
        near = d.topk(min(k + skip_self, len(ref)), largest=False).indices[:, int(skip_self):]
        out.append(torch.mode(y_ref[near], 1).values)
    return torch.cat(out) if out else torch.zeros(0, dtype=y_ref.dtype)


class RepresentationFilter(Sanitizer):
    """A sanitizer that trains through `recipe`, splits each class's activations in two (`split`), and
    removes the smaller part where the rest of the data does not recognise it as its class."""

    def __init__(self, recipe, n_classes: int, seed: int, threshold: float):
        self.recipe, self.n_classes, self.seed, self.threshold = recipe, n_classes, seed, threshold
        self.last: dict[int, dict] = {}      # class -> {"separation", "candidates", "recognised"}, last call

    def split(self, reps: torch.Tensor) -> tuple[torch.Tensor, float]:
        """(the smaller part's mask, how clearly the class splits: higher is clearer)."""
        raise NotImplementedError

    def sanitize(self, x, y):
        return self.detect(self.recipe.fit(x, y, self.n_classes, seed=self.seed), x, y), y

    def detect(self, model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The kept mask, from `model` trained on (x, y)."""
        reps = activations(model, x)
        candidate = torch.zeros(len(y), dtype=torch.bool)
        self.last = {}
        for c in torch.unique(y).tolist():
            idx = torch.nonzero(y == c).flatten()
            if len(idx) < 4:
                continue
            smaller, score = self.split(reps[idx])
            candidate[idx[smaller]] = True
            self.last[c] = {"separation": score, "candidates": int(smaller.sum())}
        # exclusionary reclassification (Chen et al. 2018), by k nearest neighbours in input space among the
        # points outside every candidate part: a legitimate part of a class still finds its class there;
        # poison, made of other classes' inputs under a small trigger, finds the classes it came from
        reference = ~candidate
        keep = torch.ones(len(y), dtype=torch.bool)
        for c, info in self.last.items():
            part = candidate & (y == c)
            pred = knn_predict(x[reference], y[reference], x[part], NEIGHBOURS)
            info["recognised"] = float((pred == c).float().mean()) if len(pred) else 1.0
            if info["recognised"] <= self.threshold:
                # a poisoned class: poison the split left on the larger side goes too, by the same test
                rest = torch.nonzero((y == c) & reference).flatten()
                own = knn_predict(x[reference], y[reference], x[rest], NEIGHBOURS, skip_self=True)
                keep[part] = False
                keep[rest[own != c]] = False
        return keep


class DetectorParams(Params):
    threshold: float = Field(0.25, gt=0, lt=1, description="a class's smaller part is removed when at most this share "
                                                          "of it has its label's majority among its nearest "
                                                          "neighbours outside the smaller parts")


class RepresentationDefense(SanitizerDefense):
    mitigates = ("backdoor",)
    Params = DetectorParams
    sweepable = ("threshold",)
    modalities: ClassVar[tuple[str, ...]] = ("image", "tabular")
    Filter: ClassVar[type] = RepresentationFilter
    network_only: ClassVar[str | None] = "reads a network's penultimate activations"

    def make(self, p, data, recipe):
        return self.Filter(recipe, data.n_classes, 0, p.threshold)
