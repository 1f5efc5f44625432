"""The model under audit and how an attacker may reach it.

Every query through `scores` or `labels` is counted (one query per input row) and can be capped by a
budget, so a finding can say what an attack cost. White-box attacks use `module` directly.
"""
from __future__ import annotations

import contextlib
from enum import Enum
from typing import Callable

import numpy as np
import torch
from torch import nn

from .errors import QueryBudgetExceeded


class Access(str, Enum):
    LABELS = "labels"
    SCORES = "scores"
    WHITE_BOX = "white-box"

    @property
    def level(self) -> int:
        return {"labels": 0, "scores": 1, "white-box": 2}[self.value]

    def allows(self, needed: "Access") -> bool:
        return self.level >= needed.level


class Target:
    """Base adapter. Subclasses implement `_scores` (probabilities) or `_labels`."""

    kind = "callable"

    def __init__(self, access: Access, n_classes: int, input_shape: tuple[int, ...], name: str = "model"):
        self.access = access
        self.n_classes = n_classes
        self.input_shape = tuple(input_shape)
        self.name = name
        self.queries = 0
        self._limit: int | None = None
        self.source: dict | None = None  # the model file's scan, when the model was loaded from a file

    # -- query accounting ---------------------------------------------------------------------
    def _spend(self, n: int) -> None:
        if self._limit is not None and self.queries + n > self._limit:
            raise QueryBudgetExceeded(f"query budget of {self._limit} exhausted")
        self.queries += n

    @contextlib.contextmanager
    def budget(self, limit: int | None):
        """Count the queries made inside the block; raise QueryBudgetExceeded past `limit`."""
        saved_q, saved_l = self.queries, self._limit
        self.queries, self._limit = 0, limit
        try:
            yield self
        finally:
            self.spent = self.queries
            self.queries, self._limit = saved_q + self.queries, saved_l

    # -- black-box interface ------------------------------------------------------------------
    @contextlib.contextmanager
    def uncounted(self):
        """Queries made inside the block (e.g. measuring a stolen copy's agreement) are not an attack's cost;
        the block runs without gradients."""
        saved_q, saved_l = self.queries, self._limit
        self._limit = None
        try:
            with torch.no_grad():
                yield self
        finally:
            self.queries, self._limit = saved_q, saved_l

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        if not self.access.allows(Access.SCORES):
            raise PermissionError(f"{self.name} gives labels only")
        self._spend(x.shape[0])
        return self._scores(x)

    @torch.no_grad()
    def labels(self, x: torch.Tensor) -> torch.Tensor:
        self._spend(x.shape[0])
        return self._labels(x)

    def _scores(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _labels(self, x: torch.Tensor) -> torch.Tensor:
        return self._scores(x).argmax(1)

    # -- white-box interface ------------------------------------------------------------------
    @property
    def module(self) -> nn.Module:
        raise PermissionError(f"{self.name} is not a white-box target")

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "access": self.access.value,
                "n_classes": self.n_classes, "input_shape": list(self.input_shape)}


class TorchTarget(Target):
    """A PyTorch module returning logits (or probabilities, which the masking checks notice)."""

    kind = "torch"

    def __init__(self, module: nn.Module, n_classes: int, input_shape, access: Access = Access.WHITE_BOX,
                 name: str = "torch-model", batch_size: int = 4096):
        super().__init__(access, n_classes, input_shape, name)
        try:
            module.eval()
        except NotImplementedError:
            pass  # torch.export modules are already in inference mode and refuse eval()
        self._module = module
        for p in self._module.parameters():
            p.requires_grad_(False)
        self.batch_size = batch_size
        self.device = torch.device("cpu")

    def to_device(self, device: torch.device) -> "TorchTarget":
        """Runs the network on `device` (core/device.py); queries and `module` keep CPU tensors outside."""
        from .device import move
        if device.type != "cpu":
            self._module = move(self._module, device)
            self.device = device
        return self

    @property
    def module(self) -> nn.Module:
        if self.access is not Access.WHITE_BOX:
            raise PermissionError(f"{self.name} is audited with {self.access.value} access")
        if self.device.type != "cpu":
            from .device import OnDevice
            return OnDevice(self._module, self.device)
        return self._module

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.device.type != "cpu":
            return torch.cat([self._module(c.to(self.device)).cpu() for c in x.split(self.batch_size)])
        return torch.cat([self._module(c) for c in x.split(self.batch_size)])

    def _scores(self, x):
        out = self._forward(x)
        return out if outputs_are_probabilities(out) else out.softmax(1)

    def _labels(self, x):
        return self._forward(x).argmax(1)


class NumpyTarget(Target):
    """A model reached through numpy: a scikit-learn estimator, an ONNX session, or a callable.

    `fn` maps a float32 array of shape (n, *input_shape) to probabilities (n, k) or labels (n,).
    """

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], n_classes: int, input_shape,
                 access: Access = Access.SCORES, name: str = "model", kind: str = "callable"):
        super().__init__(access, n_classes, input_shape, name)
        self.fn = fn
        self.kind = kind

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        out = np.asarray(self.fn(x.detach().cpu().numpy().astype(np.float32)))
        return torch.from_numpy(np.ascontiguousarray(out))

    def _scores(self, x):
        out = self._call(x).to(torch.float32)
        if out.ndim != 2:
            raise ValueError(f"{self.name} returned shape {tuple(out.shape)}, expected (n, n_classes) scores")
        return out if outputs_are_probabilities(out) else out.softmax(1)

    def _labels(self, x):
        out = self._call(x)
        return out.argmax(1) if out.ndim == 2 else out.to(torch.int64).reshape(-1)


def outputs_are_probabilities(out: torch.Tensor, tol: float = 1e-4) -> bool:
    """True when every row is non-negative and sums to one."""
    if out.ndim != 2 or out.numel() == 0:
        return False
    return bool((out >= -tol).all() and (out <= 1 + tol).all() and ((out.sum(1) - 1).abs() < tol).all())


def sklearn_target(estimator, n_classes: int, input_shape, name: str = "sklearn-model") -> NumpyTarget:
    """A scikit-learn estimator as a target (`.estimator` keeps it: poisoning threats retrain a clone)."""
    target = _sklearn_target(estimator, n_classes, input_shape, name)
    target.estimator = estimator
    return target


def _sklearn_target(estimator, n_classes: int, input_shape, name: str) -> NumpyTarget:
    flat = lambda a: a.reshape(a.shape[0], -1)  # noqa: E731
    if hasattr(estimator, "predict_proba"):
        classes = np.asarray(estimator.classes_)
        if np.issubdtype(classes.dtype, np.integer) and classes.size and classes.min() >= 0:
            n_classes = max(n_classes, int(classes.max()) + 1)   # a model may know more classes than the data shows

        def fn(a):
            p = estimator.predict_proba(flat(a))
            full = np.zeros((a.shape[0], n_classes), dtype=np.float32)
            full[:, classes.astype(int)] = p  # a class missing from training gets probability 0
            return full
        return NumpyTarget(fn, n_classes, input_shape, Access.SCORES, name, "sklearn")
    if hasattr(estimator, "decision_function") and hasattr(estimator, "classes_"):
        # margins (a linear or kernel SVM): the scores are their softmax, binary margins as [0, f], so that
        # log-ratios of the scores are the margins themselves
        classes = np.asarray(estimator.classes_)
        if np.issubdtype(classes.dtype, np.integer) and classes.size and classes.min() >= 0:
            n_classes = max(n_classes, int(classes.max()) + 1)

        def margins(a):
            f = np.asarray(estimator.decision_function(flat(a)), dtype=np.float64)
            f = np.stack([np.zeros_like(f), f], 1) if f.ndim == 1 else f
            full = np.full((a.shape[0], n_classes), -np.inf)
            full[:, classes.astype(int)] = f
            e = np.exp(full - full.max(1, keepdims=True))
            return (e / e.sum(1, keepdims=True)).astype(np.float32)
        return NumpyTarget(margins, n_classes, input_shape, Access.SCORES, name, "sklearn")
    return NumpyTarget(lambda a: estimator.predict(flat(a)), n_classes, input_shape, Access.LABELS, name,
                       "sklearn")


class Denormalize(nn.Module):
    """[0, 1] per feature -> the feature's own range; integer-valued features rounded, with the identity as
    the rounding's gradient (BPDA), so white-box attacks still see a gradient."""

    def __init__(self, low: torch.Tensor, high: torch.Tensor, integer: torch.Tensor):
        super().__init__()
        self.register_buffer("low", low.float())
        self.register_buffer("width", (high - low).float())
        self.register_buffer("integer", integer.bool())

    def forward(self, z):
        x = self.low + z * self.width
        if bool(self.integer.any()):
            x = torch.where(self.integer, x + (x.round() - x).detach(), x)
        return x


class RescaledTarget(Target):
    """A tabular target seen in per-feature [0, 1] coordinates (see data.normalized): queries are mapped back
    to each feature's range (integer features rounded) before they reach the model, and counted on both."""

    def __init__(self, inner: Target, low: torch.Tensor, high: torch.Tensor, integer: torch.Tensor):
        super().__init__(inner.access, inner.n_classes, inner.input_shape, inner.name)
        self.inner, self.kind = inner, inner.kind
        self.denormalize = Denormalize(low, high, integer)

    def _scores(self, z):
        with torch.no_grad():
            return self.inner.scores(self.denormalize(z))

    def _labels(self, z):
        return self.inner.labels(self.denormalize(z))

    @property
    def module(self) -> nn.Module:
        return nn.Sequential(self.denormalize, self.inner.module)
