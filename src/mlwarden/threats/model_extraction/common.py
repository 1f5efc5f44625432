"""What every extraction threat reports: agreement of the stolen copy with the victim on the test data
(1 - R_test) and on uniform random inputs (1 - R_unif), with intervals, and severity from the agreement
reached against the queries it took relative to the training-set size (Tramer et al. 2016)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...core import measure
from ...core.files import torch_bytes, write_file
from ...core.finding import Metric, Remedy, Severity, Status
from ...core.recipe import Recipe
from ...core.severity import cap, extraction
from ...core.stats import clopper_pearson
from ...core.target import Access
from ...core.threat import Threat

EXTRACTION_FIX = Remedy(
    "prediction API guards",
    "Return labels or rounded/top-k scores instead of full probabilities, require API keys, rate-limit and "
    "budget queries per key, and run the extraction detector; `mlwarden serve` applies these guards. "
    "Rounding raises the cost of equation solving but does not stop loss-minimisation attacks.",
    "mlwarden serve MODEL --output rounded --decimals 2 --api-key KEY --budget 10000",
)


class ExtractionThreat(Threat):
    """Shared declarations of the model-extraction family; run on request (`--threats model-extraction`)."""
    family = "model-extraction"
    needs = Access.LABELS
    atlas = ["AML.T0024.002", "AML.T0040"]
    remedy = EXTRACTION_FIX
    in_default_audit = False


def uniform_inputs(n: int, shape, low: float, high: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand((n, *shape), generator=g)


@dataclass
class Agreement:
    """A copy measured against its victim: label agreement on the test split and on uniform inputs, and the
    test labels behind the first (one draw of a randomized victim, which the verdict reuses)."""
    test: Metric
    uniform: Metric
    victim: torch.Tensor   # the victim's test labels (-1: it abstained)
    copied: torch.Tensor   # the copy's test labels

    @property
    def metrics(self) -> list[Metric]:
        return [self.test, self.uniform]


@torch.no_grad()
def agreement(target, stolen, x_test: torch.Tensor, n_uniform: int, space, seed: int) -> Agreement:
    """Label agreement on the test split and on uniform inputs; the victim's answers here are not counted
    as attack queries."""
    x_unif = uniform_inputs(n_uniform, x_test.shape[1:], space.low, space.high, seed + 99)
    with target.uncounted():
        victim, copied = target.labels(x_test).cpu(), stolen(x_test).argmax(1).cpu()
        uniform = measure.agreement(target.labels(x_unif), stolen(x_unif).argmax(1),
                                    "agreement on uniform inputs (1 - R_unif)")
    return Agreement(measure.agreement(victim, copied, "agreement on test data (1 - R_test)"), uniform, victim,
                     copied)


def copy_verdict(a: Agreement, queries: int, n_train: int, what: str = "copied") -> tuple[str, Severity, Metric]:
    """(verdict, severity, the agreement of a constant answer): what a copy must beat before it is one is the
    victim's most common test label answered every time (on a two-class task with 63% of one class, 37%
    agreement copies nothing). At or below that rate: 'not copied', INFO. Above it, graded by agreement and
    query cost (core/severity.py `extraction`) when, on the test points where exactly one of the two is right,
    the copy is right more often than not (exact 95% bound above one half); else marked 'not shown to beat a
    constant answer' and at most LOW (a 99%-majority test set of 300 leaves too few points to show it). An
    abstention (-1, as randomized smoothing answers) is nobody's label. The victim's labels are the ones the
    agreement was measured on, so a randomized victim is judged on one draw."""
    victim, copied, test = a.victim, a.copied, a.test
    answered = victim[victim >= 0]
    counts = torch.bincount(answered) if len(answered) else torch.zeros(1, dtype=torch.long)
    constant = Metric.rate("agreement of a constant answer (the victim's most common test label)",
                           int(counts.max()), len(victim))
    if not test.value > constant.value:
        return "not copied", Severity.INFO, constant
    # on the points where exactly one of them is right, the copy must be right more often than not: an exact
    # (Clopper-Pearson) bound, as McNemar's test asks, not a normal approximation over few points
    const_right, copy_right = victim == int(counts.argmax()), copied == victim
    gained, lost = int((copy_right & ~const_right).sum()), int((const_right & ~copy_right).sum())
    if clopper_pearson(gained, gained + lost)[0] > 0.5:
        return what, extraction(test.value, queries, n_train), constant
    return (f"{what}, not shown to beat a constant answer ({constant.text()})",
            cap(extraction(test.value, queries, n_train), Severity.LOW), constant)


def agreement_text(verdict: str, a: Agreement, constant: Metric) -> str:
    """'X test agreement[, no better than a constant answer (Y)], Z on uniform inputs': the headline's numbers,
    from the agreement and copy_verdict's constant answer."""
    worse = f", no better than a constant answer ({constant.text()})" if verdict == "not copied" else ""
    return f"{a.test.text()} test agreement{worse}, {a.uniform.text()} on uniform inputs"


def copy_factory(ctx, default):
    """The network the attacker trains as the copy: the recipe's (it knows the architecture), else `default`;
    a model the recipe retrains as itself (a forest, a booster) is copied by that network too."""
    return getattr(ctx.recipe, "factory", None) or default


def fit_copy(factory, x: torch.Tensor, answers: torch.Tensor, n_classes: int, *, epochs: int = 60,
             lr: float = 1e-3, batch_size: int = 64, seed: int = 0):
    """Train a copy on the victim's answers through the one training loop (Recipe.fit): soft
    cross-entropy to probabilities, or labels (1-D answers)."""
    recipe = Recipe("extraction-copy", factory, epochs=epochs, batch_size=batch_size, lr=lr)
    return recipe.fit(x, answers.float() if answers.ndim == 2 else answers.long(), n_classes, seed=seed)


def ask(target, x: torch.Tensor, prefer_scores: bool = True) -> torch.Tensor:
    """The victim's answer: probabilities when it gives scores (and they are wanted), else labels."""
    if prefer_scores and target.access.allows(Access.SCORES):
        p = target.scores(x).float()
        return p / p.sum(1, keepdim=True).clamp_min(1e-12)
    return target.labels(x).long()


def population(ctx) -> torch.Tensor:
    """The attacker's natural data: the data set's train split (the audit's stand-in for data from the
    same distribution that the attacker owns), never the test split agreement is measured on."""
    return ctx.data.x_train


def report_copy(threat, ctx, p, stolen, queries: int, answers, evidence: str, extra: dict | None = None,
                notes: list[str] | None = None):
    """The finding of an attack that trained a copy: agreement, queries, the copy saved as evidence."""
    a = agreement(ctx.target, stolen, ctx.data.x_test, p.n_uniform, ctx.data.space, ctx.seed)
    metrics = [*a.metrics, Metric("queries", queries, unit="queries")]
    path = ctx.evidence_path(evidence)
    write_file(path, torch_bytes(stolen.state_dict()))   # bytes, then the write primitive
    kind = "probabilities" if answers.ndim == 2 else "labels"
    verdict, severity, constant = copy_verdict(a, queries, len(ctx.data.x_train))
    metrics.append(constant)
    head = (f"{verdict} from {queries} answers ({kind}): {agreement_text(verdict, a, constant)} "
            f"(training set: {len(ctx.data.x_train)} examples)")
    return threat.finding(ctx, p, status=Status.OK, severity=severity, headline=head, metrics=metrics,
                          evidence=[ctx.rel(path)], queries=queries, details={"answers": kind, "notes": notes or [], **(extra or {})})


DETECTOR_BLIND_SPOT = ("A PRADA-style detector (mlwarden serve --detector) does not see this attacker: natural "
                       "population data and uniform random queries give normally distributed query distances. "
                       "It flags synthetic streams such as Jacobian augmentation; against this one, budgets, "
                       "rate limits, label-only answers and the watermark are what remain.")
