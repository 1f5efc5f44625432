"""The data an audit works on: members (train), non-members (test), and how inputs are scaled."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .errors import UserError


def is_number(text: str) -> bool:
    """Whether a text field (a CSV cell, a --param value) reads as a number."""
    try:
        float(text)
        return True
    except ValueError:
        return False


MAX_CLASSES = 100_000   # labels are class indices; a larger one is an id or a mistake


@dataclass
class InputSpace:
    """The valid input range. Perturbation budgets (eps) are fractions of (high - low); for tabular data,
    whose columns have scales of their own, evasion budgets are fractions of each feature's range
    (`feature_low`, `feature_high`), and integer-valued columns stay whole numbers."""
    low: float
    high: float
    declared: bool  # False when inferred from the data's min and max
    feature_low: torch.Tensor | None = None    # per-feature ranges (tabular data)
    feature_high: torch.Tensor | None = None
    integer: torch.Tensor | None = None        # per-feature: every value a whole number (inferred)
    feature_rule: str = "min to max over the data"
    integer_rule: str = "every value a whole number"

    @property
    def width(self) -> float:
        return self.high - self.low

    @property
    def per_feature(self) -> bool:
        return self.feature_low is not None

    def describe(self) -> str:
        how = "declared" if self.declared else "inferred from the data"
        if self.per_feature:
            k = int(self.integer.sum())
            return (f"[{self.low:g}, {self.high:g}] overall ({how}); evasion eps is a fraction of each feature's "
                    f"own range ({self.feature_rule})" + (f"; {k} integer-valued columns ({self.integer_rule}) stay "
                                                          "whole numbers" if k else ""))
        return f"[{self.low:g}, {self.high:g}] ({how}); eps is a fraction of this range"

    @property
    def mixed_scales(self) -> bool:
        """Per-feature ranges that differ (raw tabular data), so one global eps would mean different things."""
        if not self.per_feature:
            return False
        w = self.feature_high - self.feature_low
        w = w[w > 0]
        return bool(len(w)) and float(w.max() / w.min()) > 1.01

    def feature_budget(self, eps: float) -> torch.Tensor:
        """The absolute budget of each feature at a range-relative eps."""
        return eps * (self.feature_high - self.feature_low)


@dataclass
class Dataset:
    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    space: InputSpace
    modality: str = "tabular"  # "image" (C, H, W) or "tabular" (d,)
    # how train and test were chosen: "given" (two files, or an .npz with both), or the split mlwarden made
    # itself ("split by mlwarden: ..."); membership numbers treat the train part as the members
    split: str = "given"
    classes: tuple[str, ...] | None = None   # the class names, label i the i-th, where the data names them

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_test.shape[1:])

    def describe(self) -> dict:
        return {
            "name": self.name,
            "modality": self.modality,
            "input_shape": list(self.input_shape),
            "n_classes": self.n_classes,
            "n_train": int(self.x_train.shape[0]),
            "n_test": int(self.x_test.shape[0]),
            "input_range": [self.space.low, self.space.high],
            "input_range_declared": self.space.declared,
            "split": self.split,
            **({"classes": list(self.classes)} if self.classes else {}),
        }


def make_dataset(name, x_train, y_train, x_test, y_test, *, input_range=None, modality=None,
                 n_classes=None) -> Dataset:
    """Validate arrays and build a Dataset; every problem is a UserError naming what is wrong."""
    xs = []
    for label, x in (("x_train", x_train), ("x_test", x_test)):
        x = torch.as_tensor(x)
        if not (x.is_floating_point() or x.dtype in (torch.uint8, torch.int32, torch.int64, torch.int16)):
            raise UserError(f"{name}: {label} has dtype {x.dtype}; numeric features are required")
        x = x.to(torch.float32)
        if x.ndim < 2 or x.shape[0] == 0:
            raise UserError(f"{name}: {label} has shape {tuple(x.shape)}; expected (n_samples, features...)")
        if x[0].numel() == 0:
            raise UserError(f"{name}: {label} has shape {tuple(x.shape)}: samples without a single feature")
        if not torch.isfinite(x).all():
            bad = int((~torch.isfinite(x)).any(dim=tuple(range(1, x.ndim))).sum())
            raise UserError(f"{name}: {label} contains NaN or infinite values in {bad} rows")
        xs.append(x)
    x_train, x_test = xs
    if x_train.shape[1:] != x_test.shape[1:]:
        raise UserError(f"{name}: x_train has sample shape {tuple(x_train.shape[1:])} "
                        f"but x_test has {tuple(x_test.shape[1:])}")
    ys = []
    for label, y, x in (("y_train", y_train, x_train), ("y_test", y_test, x_test)):
        y = torch.as_tensor(y)
        if y.is_floating_point():
            if not torch.isfinite(y).all() or (y != y.round()).any():
                raise UserError(f"{name}: {label} must hold integer class labels")
        y = y.to(torch.int64).reshape(-1)
        if y.shape[0] != x.shape[0]:
            raise UserError(f"{name}: {label} has {y.shape[0]} labels for {x.shape[0]} samples")
        if (y < 0).any():
            raise UserError(f"{name}: {label} has negative labels; classes must be 0..n_classes-1")
        if y.numel() and int(y.max()) >= MAX_CLASSES:
            raise UserError(f"{name}: {label} has the label {int(y.max())}; classes must be 0..n_classes-1 with "
                            f"fewer than {MAX_CLASSES} classes (are the labels ids or one-hot rows?)")
        ys.append(y)
    y_train, y_test = ys
    k = int(max(y_train.max(), y_test.max())) + 1
    if len(torch.unique(torch.cat(ys))) < 2:
        raise UserError(f"{name}: every label is {int(y_train[0])}: a classifier needs at least two classes")
    if n_classes is not None:
        if k > n_classes:
            raise UserError(f"{name}: labels go up to {k - 1} but the model has {n_classes} classes")
        k = n_classes
    if input_range is not None:
        lo, hi = float(input_range[0]), float(input_range[1])
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise UserError(f"{name}: input range [{lo}, {hi}] must be finite: eps is a fraction of its width")
        if not hi > lo:
            raise UserError(f"{name}: input range [{lo}, {hi}] is empty")
        both = torch.cat([x_train.flatten(), x_test.flatten()])
        if both.min() < lo - 1e-6 or both.max() > hi + 1e-6:
            raise UserError(f"{name}: data lies in [{both.min():g}, {both.max():g}], "
                            f"outside the declared input range [{lo:g}, {hi:g}]")
        space = InputSpace(lo, hi, True)
    else:
        both = torch.cat([x_train.flatten(), x_test.flatten()])
        lo, hi = float(both.min()), float(both.max())
        space = InputSpace(lo, hi if hi > lo else lo + 1.0, False)
    if modality is None:
        modality = "image" if x_train.ndim == 4 else "tabular"
    if modality == "tabular" and x_train.ndim == 2:
        both = torch.cat([x_train, x_test])
        space.feature_low, space.feature_high = both.min(0).values, both.max(0).values
        space.integer = (both == both.round()).all(0)
    return Dataset(name, x_train, y_train, x_test, y_test, k, space, modality)


def normalized(data: Dataset) -> Dataset:
    """Tabular data with every feature mapped to [0, 1] by its own range (constant features to 0): the
    coordinates in which a range-relative eps means the same for every feature."""
    s = data.space
    lo, w = s.feature_low, s.feature_high - s.feature_low
    safe = torch.where(w > 0, w, torch.ones_like(w))
    z = [((x - lo) / safe).clamp(0, 1) for x in (data.x_train, data.x_test)]
    return Dataset(f"{data.name} (each feature scaled to [0, 1])", z[0], data.y_train, z[1], data.y_test,
                   data.n_classes, InputSpace(0.0, 1.0, True), data.modality)


def declare_features(data: Dataset, feature_ranges=None, integer_features=None) -> Dataset:
    """A declared per-feature scale (each feature's [low, high]) and declared integer-valued features, in
    place of what the data suggests; every problem is a UserError naming it."""
    s = data.space
    if feature_ranges is None and integer_features is None:
        return data
    if not s.per_feature:
        raise UserError(f"{data.name}: per-feature ranges and integer features apply to tabular data (one row of "
                        f"features per sample); this data is {data.modality} of shape {list(data.input_shape)}")
    d = data.input_shape[0]
    if feature_ranges is not None:
        r = torch.as_tensor(feature_ranges, dtype=torch.float32)
        if r.shape != (d, 2) or not torch.isfinite(r).all() or (r[:, 1] < r[:, 0]).any():
            raise UserError(f"{data.name}: data.feature_ranges must give {d} finite [low, high] pairs, low <= high")
        both = torch.cat([data.x_train, data.x_test])
        outside = ((both < r[:, 0] - 1e-6) | (both > r[:, 1] + 1e-6)).any(0).nonzero()[:, 0].tolist()
        if outside:
            raise UserError(f"{data.name}: feature {outside[0]} has values outside its declared range "
                            f"{r[outside[0]].tolist()} (features outside: {outside[:10]})")
        s.feature_low, s.feature_high, s.feature_rule = r[:, 0], r[:, 1], "declared in data.feature_ranges"
    if integer_features is not None:
        bad = [i for i in integer_features if not 0 <= i < d]
        if bad:
            raise UserError(f"{data.name}: data.integer_features {bad} are not feature indices 0..{d - 1}")
        s.integer, s.integer_rule = torch.zeros(d, dtype=torch.bool), "declared in data.integer_features"
        s.integer[list(integer_features)] = True
    return data


def shape_only(shape, input_range=None) -> Dataset:
    """No data, only what a server needs to validate requests: the sample shape and, when given, the input
    range (unbounded otherwise). Two zero rows let the model be probed; the class count comes from it."""
    shape = tuple(int(d) for d in shape)
    if not shape or any(d < 1 for d in shape):
        raise UserError(f"input shape {list(shape)} must list positive sizes")
    x = torch.zeros((2, *shape))
    y = torch.tensor([0, 1])
    if input_range is None:
        space = InputSpace(-math.inf, math.inf, False)
    else:
        lo, hi = float(input_range[0]), float(input_range[1])
        if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
            raise UserError(f"input range [{lo}, {hi}] must be finite and not empty")
        space = InputSpace(lo, hi, True)
    return Dataset("input shape only", x, y, x, y, 2, space, "image" if len(shape) == 3 else "tabular")
