"""Pieces the evasion attacks share: projections, losses, evaluation point selection, metrics."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from ...core.data import Dataset
from ...core.perturb import flat_norm, normalize_step, project, random_start  # noqa: F401 (re-exported)
from ...core.finding import Metric, Remedy, Severity
from ...core.severity import EVASION
from ...core.threat import Params

WHITE_BOX_ATLAS = ["AML.T0043.000", "AML.T0015"]  # Craft Adversarial Data: White-Box Optimization; Evade
BLACK_BOX_ATLAS = ["AML.T0043.001", "AML.T0040", "AML.T0015"]  # Black-Box Optimization; Inference API
PHYSICAL_ATLAS = ["AML.T0043.000", "AML.T0041", "AML.T0015"]  # ...; Physical Environment Access

ADV_TRAINING = Remedy(
    "adversarial training",
    "Retrain with PGD adversarial training (Madry et al. 2018; method=trades for TRADES) at the audited eps; "
    "harden retrains through the recipe, re-runs this audit with its gradient-masking checks and shows the "
    "clean accuracy and training time it cost. Input preprocessing alone must be re-attacked adaptively "
    "(BPDA/EOT) before it is trusted.",
    "mlwarden harden --defense adversarial-training --param eps={eps:g} --param norm={norm}",
)

def severity_from_ratio(robust: float, clean: float) -> Severity:
    return EVASION.grade(robust / clean if clean > 0 else 0.0)


class EvasionParams(Params):
    eps: float = Field(0.1, gt=0, description="budget as a fraction of the input range")
    norm: str = Field("linf", pattern="^(linf|l2)$")
    n_samples: int = Field(200, gt=0)
    batch_size: int = Field(512, gt=0)


def abs_eps(eps: float, norm: str, data: Dataset) -> float:
    """Convert a range-relative eps into input units. For L2 it is scaled by the range too."""
    return eps * data.space.width


def eval_points(data: Dataset, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed, seeded subset of the test split: the points every evasion attack is measured on."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(data.x_test.shape[0], generator=g)[:n]
    return data.x_test[idx], data.y_test[idx]


def ce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="none")


def dlr_targeted_loss(logits: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Targeted difference-of-logits-ratio loss (Croce & Hein 2020, eq. 7); scale invariant."""
    srt = logits.sort(1, descending=True).values
    z_y = logits.gather(1, y[:, None])[:, 0]
    z_t = logits.gather(1, t[:, None])[:, 0]
    k = logits.shape[1]
    return -(z_y - z_t) / (srt[:, 0] - 0.5 * (srt[:, min(2, k - 1)] + srt[:, min(3, k - 1)]) + 1e-12)


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z_y - max_{j != y} z_j: positive while the point is still classified correctly."""
    z_y = logits.gather(1, y[:, None])[:, 0]
    other = logits.clone()
    other.scatter_(1, y[:, None], float("-inf"))
    return z_y - other.amax(1)


@torch.no_grad()
def predict(model, x: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
    return torch.cat([model(c).argmax(1) for c in x.split(batch_size)])


def accuracy_metrics(clean_ok: torch.Tensor, robust_ok: torch.Tensor, reliable: bool = True) -> list[Metric]:
    n = int(clean_ok.numel())
    return [Metric.rate("clean_accuracy", int(clean_ok.sum()), n),
            Metric.rate("robust_accuracy", int(robust_ok.sum()), n, reliable=reliable)]


def batched(fn, x: torch.Tensor, y: torch.Tensor, batch_size: int, ctx=None) -> torch.Tensor:
    outs = []
    for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
        if ctx is not None:
            ctx.check_time()
        outs.append(fn(xb, yb))
    return torch.cat(outs)
