"""One severity scale (critical > high > medium > low > info) and every ladder that maps a measured number
onto it, in one place so that they can be read, documented (docs/threats.md, "Severity") and changed
together. A threat grades the number its headline reports, usually the end of its confidence interval
that is least favourable to a claim of risk."""
from __future__ import annotations

import math
from dataclasses import dataclass

from .finding import Severity


@dataclass(frozen=True)
class Ladder:
    """Cut-offs, worst first: `value` at or beyond a cut-off gets its severity."""
    measures: str
    cuts: tuple[tuple[float, Severity], ...]
    higher_is_worse: bool = True
    otherwise: Severity = Severity.LOW

    def grade(self, value: float) -> Severity:
        for cut, sev in self.cuts:
            if (value >= cut) if self.higher_is_worse else (value < cut):
                return sev
        return self.otherwise


EVASION = Ladder("robust accuracy / clean accuracy at the audited eps",
                 ((0.25, Severity.CRITICAL), (0.6, Severity.HIGH), (0.9, Severity.MEDIUM)), higher_is_worse=False)
PATCH = Ladder("targeted success rate of the universal patch at random placements",
               ((0.75, Severity.CRITICAL), (0.5, Severity.HIGH), (0.2, Severity.MEDIUM)))
MEMBERSHIP = Ladder("lower 95% bound of the strongest attack's TPR at 1% FPR (chance: 1%)",
                    ((0.10, Severity.HIGH), (0.03, Severity.MEDIUM), (math.nextafter(0.01, 1), Severity.LOW)),
                    otherwise=Severity.INFO)
EXTRACTION = Ladder("test agreement of the stolen copy (capped by its query cost, see extraction())",
                    ((0.99, Severity.CRITICAL), (0.95, Severity.HIGH), (0.90, Severity.MEDIUM)))

POISONING = Ladder("lower 95% bound of the rise in the victim's worst error rate (ham flagged or spam let through) "
                   "at the headline attacker control",
                   ((0.5, Severity.CRITICAL), (0.2, Severity.HIGH), (0.05, Severity.MEDIUM)))

BACKDOOR = Ladder("lower 95% bound of the attack success rate (triggered inputs of other classes sent to the "
                  "attacker's class) at the headline poison rate",
                  ((0.9, Severity.CRITICAL), (0.5, Severity.HIGH), (0.2, Severity.MEDIUM)))

FEDERATED = Ladder("lower 95% bound of the drop in the global model's final test accuracy (clean federation minus "
                   "attacked, paired by seed) at the headline fraction of malicious clients",
                   ((0.5, Severity.CRITICAL), (0.2, Severity.HIGH), (0.05, Severity.MEDIUM),
                    (math.nextafter(0.0, 1), Severity.LOW)), otherwise=Severity.INFO)

LEAKAGE = Ladder("lower 95% bound of the share of a client's training images a curious server reconstructs at "
                 ">= 25 dB PSNR (or of its labels, for label recovery) at the smallest audited batch",
                 ((0.5, Severity.CRITICAL), (0.2, Severity.HIGH), (0.05, Severity.MEDIUM),
                  (math.nextafter(0.0, 1), Severity.LOW)), otherwise=Severity.INFO)


def secret_exposure(max_bits: float) -> Ladder:
    """Canary exposure in bits, against the most the secret space allows (log2 |R|); an extracted
    canary is critical whatever its exposure."""
    return Ladder(f"highest exposure of an inserted canary (of {max_bits:.1f} bits)",
                  ((max_bits - 3, Severity.HIGH), (10.0, Severity.MEDIUM)))


def cap(sev: Severity, most: Severity) -> Severity:
    return sev if sev.rank <= most.rank else most


def extraction(test_agreement: float, queries: int, n_train: int) -> Severity:
    """A copy that needed more queries than a tenth of the training set is at most high, more than the
    training set at most medium (Tramer et al. 2016 compare query cost with training-set size)."""
    sev = EXTRACTION.grade(test_agreement)
    if queries > n_train:
        return cap(sev, Severity.MEDIUM)
    if queries > 0.1 * n_train:
        return cap(sev, Severity.HIGH)
    return sev
