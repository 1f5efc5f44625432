"""Label-only membership inference (Choquette-Choo, Tramer, Carlini and Papernot 2021, "Label-Only
Membership Inference Attacks", ICML): against an API that answers labels only, query each point's
augmented views and Gaussian-noise copies and count how many keep the true label. Training points sit
further from the decision boundary, so more of their copies stay correct.

The count k of K queries becomes a two-class signal p = (k + 1/2) / (K + 1) (the label's estimated
probability under the perturbations), and the score-based attacks run on it unchanged: `robustness` is
the paper's threshold on the count; `robustness-lira` and `robustness-rmia` calibrate each point's count
against reference models queried with the very same perturbations (LiRA and RMIA on the count, the
difficulty calibration of Watson et al. 2022 that the paper's own attack lacks)."""
from __future__ import annotations

import numpy as np
import torch
from typing import Annotated

from pydantic import Field, model_validator

from ...core.registry import register
from ...core.target import Access, Target
from ...core.threat import Context
from ...privacy.views import MAX_VIEWS, NoisePlan, apply_view, image_views
from .common import Pool
from .membership_inference import MembershipInference, PoolParams, ViewParams

ATTACKS = {"robustness": "loss", "robustness-lira": "lira-online", "robustness-rmia": "rmia-online"}


class Lp(ViewParams, PoolParams):
    attacks: list[str] = Field(default_factory=lambda: list(ATTACKS))
    augmentations: int = Field(9, ge=1, le=MAX_VIEWS, description="image data: the point and its 1-px shifts "
                               "(up to 9; 18 with flips), each one labels-only query")
    sigmas: list[Annotated[float, Field(gt=0, le=10)]] = Field(
        default_factory=lambda: [0.1, 0.2, 0.3], description="Gaussian noise levels, fractions of the input range's width")
    draws: int = Field(10, ge=0, le=1000, description="noisy copies per point and noise level")

    @model_validator(mode="after")
    def _enough_queries(self):
        if self.augmentations + len(self.sigmas) * self.draws < 2:
            raise ValueError("label-only membership needs at least 2 queries per point: raise augmentations or draws")
        return self


@torch.no_grad()
def robustness_counts(model: torch.nn.Module | Target, x: torch.Tensor, y: torch.Tensor, views: list,
                      noise: NoisePlan, fill: float, batch: int = 4096) -> np.ndarray:
    """(N,) how many of the len(views) + noise.queries perturbed copies of each point `model` labels y."""
    def labels(xb):
        if isinstance(model, Target):
            return model.labels(xb)
        return torch.cat([model(c).argmax(1) for c in xb.split(batch)])
    k = torch.zeros(len(x), dtype=torch.int64)
    for v in views:
        k += labels(x if v is None else apply_view(x, v, fill)) == y
    for xn in noise.copies(x):
        k += labels(xn) == y
    return k.numpy()


def count_signal(k: np.ndarray, total: int) -> np.ndarray:
    """(1, N, 2) log-probabilities of the two-class signal [label kept, label lost], p = (k + 1/2)/(K + 1)."""
    p = (k + 0.5) / (total + 1)
    return np.stack([np.log(p), np.log1p(-p)], axis=-1)[None]


@register
class LabelOnlyMembership(MembershipInference):
    """Label-only membership inference from the robustness of the label to augmentations and noise."""
    checks_split = False   # its pool or its signal is not the class log-probabilities on the data's split
    name = "label-only-membership"
    title = "Membership inference from labels only (was this record in the training set?)"
    needs = Access.LABELS
    Params = Lp
    profiles = {"quick": {"n_reference": 8}, "standard": {"n_reference": 16, "draws": 20},
                "thorough": {"n_reference": 64, "augmentations": 18, "flips": True, "draws": 30}}
    in_default_audit = False
    ATTACKS, PRIMARY, SHOWN = list(ATTACKS), "robustness-lira", tuple(ATTACKS)
    NO_REFERENCES = ("robustness",)

    def signal_fn(self, ctx: Context, p: Lp, pool: Pool, notes: list[str]):
        x = pool.x
        image = ctx.data.modality == "image" and len(ctx.data.input_shape) == 3
        views = image_views(p.augmentations, p.flips) if image else [None]
        space = ctx.data.space
        noise = NoisePlan(tuple(p.sigmas), p.draws, space.low, space.high, ctx.seed)
        total = len(views) + noise.queries
        notes.append(f"Signal: of {total} labels-only queries per point ({len(views)} view(s): "
                     + ", ".join("as is" if v is None else v.describe() for v in views)
                     + f"; {noise.draws} Gaussian-noise copies at each sigma in {list(p.sigmas)} of the input range), "
                     "how many keep the true label; the same queries go to every reference model")
        if not image and p.augmentations > 1:
            notes.append("augmentations apply to images; this data was queried with noise only")

        def signal(model, y):
            return count_signal(robustness_counts(model, x, y, views, noise, space.low), total), \
                np.zeros(len(y), dtype=np.int64)
        return signal

    @staticmethod
    def score(name, inputs, seed):
        return MembershipInference.score(ATTACKS[name], inputs, seed)
