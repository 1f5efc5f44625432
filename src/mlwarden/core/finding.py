"""What a threat returns: a Finding with severity, metrics with intervals, evidence and cost."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from .stats import clopper_pearson


class Severity(str, Enum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    INFO = "info"

    @property
    def rank(self) -> int:
        return ["info", "low", "medium", "high", "critical"].index(self.value)


class Status(str, Enum):
    OK = "ok"                    # the number is a result
    UNRELIABLE = "unreliable"    # a sanity check fired: the number is not a result
    FAILED = "failed"            # the attack itself failed (error, time budget)
    SKIPPED = "skipped"          # the subject does not meet the threat's needs


@dataclass
class Metric:
    name: str
    value: float
    n: int | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    unit: str = ""
    reliable: bool = True

    @classmethod
    def rate(cls, name: str, k: int, n: int, reliable: bool = True) -> "Metric":
        lo, hi = clopper_pearson(k, n)
        return cls(name, k / n if n else float("nan"), n, lo, hi, "rate", reliable)

    def text(self) -> str:
        if self.value is None or self.value != self.value or (self.unit == "rate" and self.ci_low is None):
            return "n/a (not a finite number)" if self.value is None or self.value != self.value else \
                f"{100 * self.value:.1f}% (n={self.n})"
        if self.unit == "rate":
            s = f"{100 * self.value:.1f}% (n={self.n}, 95% CI {100 * self.ci_low:.1f}-{100 * self.ci_high:.1f}%)"
        elif self.unit == "dB" and self.ci_low is not None:
            s = f"{self.value:.1f} dB (n={self.n}, 95% CI {self.ci_low:.1f}-{self.ci_high:.1f})"
        elif self.unit == "auc" and self.ci_low is not None:
            s = f"{self.value:.3f} (n={self.n}, 95% CI {self.ci_low:.3f}-{self.ci_high:.3f})"
        else:
            s = f"{self.value:.4g}{(' ' + self.unit) if self.unit else ''}"
        return s if self.reliable else s + " [unreliable]"


@dataclass
class Check:
    """A sanity check on a number (e.g. a gradient-masking check) and whether it fired."""
    name: str
    fired: bool
    detail: str
    advice: str = ""   # what the user can do when the check fires


@dataclass
class Remedy:
    """The fix a finding recommends: a registered defence (or a practice, when no defence applies), what it
    does, and the exact command that applies it. The command may name the threat's parameters as
    `{eps:g}`; `for_params` fills them in, and the runner adds the flags that name the audited subject."""
    name: str
    description: str
    command: str = ""

    def for_params(self, params: dict[str, Any]) -> "Remedy":
        return Remedy(self.name, self.description, self.command.format_map(params) if self.command else "")


_FIELD_TYPES = {"threat": str, "family": str, "title": str, "headline": str, "error": str, "profile": str,
                "metrics": list, "checks": list, "evidence": list, "atlas": list, "params": dict, "details": dict,
                "seconds": (int, float), "queries": int}


@dataclass
class Finding:
    threat: str
    family: str
    title: str
    status: Status
    severity: Severity
    headline: str
    metrics: list[Metric] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)
    seconds: float = 0.0
    queries: int = 0
    remedy: Remedy | None = None
    atlas: list[str] = field(default_factory=list)
    profile: str = "quick"
    params: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    def metric(self, name: str) -> Metric:
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = self.status.value
        d["severity"] = self.severity.value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Finding":
        """Read a finding back (from findings/ or report.json); a field of the wrong type is a TypeError."""
        d = dict(d)
        for key, kinds in _FIELD_TYPES.items():
            if key in d and not isinstance(d[key], kinds):
                raise TypeError(f"finding field '{key}' is a {type(d[key]).__name__}")
        for key in ("evidence", "atlas"):
            if not all(isinstance(x, str) for x in d.get(key, [])):
                raise TypeError(f"finding field '{key}' must list strings")
        for key in ("metrics", "checks"):
            if not all(isinstance(x, dict) for x in d.get(key, [])):
                raise TypeError(f"finding field '{key}' must list objects")
        d["status"] = Status(d["status"])
        d["severity"] = Severity(d["severity"])
        d["metrics"] = [Metric(**m) for m in d.get("metrics", [])]
        d["checks"] = [Check(**c) for c in d.get("checks", [])]
        remedy = d.pop("remedy", None) or d.pop("defense", None)   # reports before 0.2 called it "defense"
        d["remedy"] = Remedy(**remedy) if remedy else None
        return cls(**d)
