"""Spam filters as audit subjects: the filter as a Target, and how to train a fresh one as a recipe.

A filter is any object with `fit(texts, labels) -> self`, `spam_scores(texts)` (probability of spam in
[0, 1]) and `verdicts(texts)` (0 ham, 1 unsure, 2 spam): the built-in SpamBayes-style filter, or a
scikit-learn text pipeline (e.g. CountVectorizer + MultinomialNB) wrapped by `SklearnTextFilter`."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch

from ..core.errors import UserError
from ..core.files import ModelFiles
from ..core.target import Access, Target
from .messages import decode
from .spambayes import HAM, SPAM, SpamBayes


class SklearnTextFilter:
    """A scikit-learn pipeline that takes raw text (a vectorizer first) as a filter. It has no unsure band:
    its own `predict` says ham or spam."""

    def __init__(self, pipeline):
        self.pipeline = pipeline
        self.name = _describe(pipeline)

    def fit(self, texts, labels) -> "SklearnTextFilter":
        from sklearn.base import clone
        self.pipeline = clone(self.pipeline).fit(list(texts), np.asarray(labels))
        return self

    def fresh(self) -> "SklearnTextFilter":
        from sklearn.base import clone
        return SklearnTextFilter(clone(self.pipeline))

    def to_files(self, name: str) -> ModelFiles:
        """The pipeline as `skops.io.dump` writes it (`name`.skops): what `mlwarden audit --model` loads."""
        from ..core.extras import require
        require("skops", "sklearn", "saving a scikit-learn model")
        import skops.io
        return ModelFiles(f"{name}.skops", "skops", {f"{name}.skops": skops.io.dumps(self.pipeline)})

    def spam_scores(self, texts) -> np.ndarray:
        texts = list(texts)
        spam = list(self.pipeline.classes_).index(1)
        if hasattr(self.pipeline, "predict_proba"):
            return self.pipeline.predict_proba(texts)[:, spam]
        return (self.pipeline.predict(texts) == 1).astype(np.float64)

    def verdicts(self, texts) -> np.ndarray:
        return np.where(self.pipeline.predict(list(texts)) == 1, SPAM, HAM)


def _describe(pipeline) -> str:
    steps = getattr(pipeline, "steps", None)
    return " + ".join(type(s).__name__ for _, s in steps) if steps else type(pipeline).__name__


def check_text_pipeline(estimator, where: str) -> SklearnTextFilter:
    """A loaded scikit-learn model that can filter raw messages, or a one-line error saying why not."""
    if not (hasattr(estimator, "predict") and hasattr(estimator, "fit")):
        raise UserError(f"{where}: not a scikit-learn estimator")
    if not hasattr(estimator, "classes_"):
        raise UserError(f"{where}: the model is not fitted (it has no classes_); save it after fit()")
    classes = [int(c) if isinstance(c, (int, np.integer)) else c for c in estimator.classes_]
    if sorted(classes, key=str) != [0, 1]:
        shown = ", ".join(str(c) for c in classes[:6])
        raise UserError(f"{where}: a spam filter predicts the classes 0 (ham) and 1 (spam); this model's classes are "
                        f"[{shown}] (train it on 0/1 labels)")
    try:
        estimator.predict(["a test message"])
    except Exception as e:  # noqa: BLE001 - any failure means the model does not take raw text
        why = " ".join(str(e).split())[:120]
        raise UserError(f"{where}: the model cannot classify raw text messages ({type(e).__name__}: {why}); "
                        "give a pipeline that starts with a text vectorizer") from None
    return SklearnTextFilter(estimator)


class FilterTarget(Target):
    """A spam filter behind the Target interface: inputs are encoded messages (text.messages.encode); scores
    are [P(ham), P(spam)]; labels threshold at 0.5 (the unsure band is the filter's own `verdicts`)."""

    kind = "spam-filter"

    def __init__(self, filter, name: str | None = None, access: Access = Access.SCORES):
        super().__init__(access, 2, (0,), name or filter.name)
        self.filter = filter

    def _scores(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.as_tensor(self.filter.spam_scores(decode(x)), dtype=torch.float32)
        return torch.stack([1 - p, p], 1)

    def verdicts(self, x: torch.Tensor) -> np.ndarray:
        """0 ham, 1 unsure, 2 spam, one per message (counted as queries)."""
        self._spend(x.shape[0])
        return self.filter.verdicts(decode(x))

    def describe(self) -> dict:
        return {**super().describe(), "input_shape": ["message"], "filter": self.filter.name}


@dataclass
class FilterRecipe:
    """How to train a fresh filter like the target: `make()` returns an untrained filter. `data_filter`, the
    sanitizer hook of core.recipe.Recipe, sees the encoded training messages before the filter does."""
    name: str
    make: Callable[[], object]
    data_filter: Callable | None = None

    def with_(self, **changes) -> "FilterRecipe":
        return replace(self, **changes)

    def describe(self) -> dict:
        return {"name": self.name, "data_filter": repr(self.data_filter) if self.data_filter else None}

    def fit(self, x: torch.Tensor, y: torch.Tensor, n_classes: int = 2, *, seed: int = 0):
        if self.data_filter is not None:
            x, y = self.data_filter(x, y)
        return self.make().fit(decode(x), y.numpy())

    def target_for(self, model, data, access: Access, name: str) -> Target:
        return FilterTarget(model, name, access)


def spambayes_recipe() -> FilterRecipe:
    return FilterRecipe("spambayes", SpamBayes)


def sklearn_recipe(flt: SklearnTextFilter) -> FilterRecipe:
    return FilterRecipe(f"scikit-learn ({flt.name})", flt.fresh)


def recipe_for(flt) -> FilterRecipe:
    """How to train a fresh filter like `flt`: a clone of a scikit-learn pipeline, or a new filter of its class."""
    if isinstance(flt, SklearnTextFilter):
        return sklearn_recipe(flt)
    if hasattr(flt, "fresh"):   # a filter that makes an untrained copy of itself (io/hf.py's fine-tuned classifier)
        return FilterRecipe(getattr(flt, "recipe_name", flt.name), flt.fresh)
    return FilterRecipe(getattr(flt, "name", type(flt).__name__), type(flt))


def as_filter_target(model, name: str) -> FilterTarget:
    """A Python object as a spam-filter target: a filter (fit/spam_scores/verdicts) or a text pipeline."""
    if all(hasattr(model, a) for a in ("fit", "spam_scores", "verdicts")):
        return FilterTarget(model, name)
    return FilterTarget(check_text_pipeline(model, name), name)
