"""What a threat returns: a Finding with severity, metrics with intervals, evidence and cost."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import Malformed, first_error
from .files import MAX_NESTING, nesting
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


# -- reading a finding back: exactly what `Finding.to_dict` writes, or a Malformed error naming the field ----------
_Finite = Annotated[float, Field(allow_inf_nan=False)]
_Count = Annotated[int, Field(ge=0, le=10**15)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class MetricRecord(_Record):
    name: str
    value: _Finite | None                 # null: the number was not finite (reports write NaN and inf as null)
    n: Annotated[int, Field(ge=0, le=10**12)] | None = None
    ci_low: _Finite | None = None
    ci_high: _Finite | None = None
    unit: str = ""
    reliable: bool = True

    @model_validator(mode="after")
    def _a_rate_is_a_rate(self):
        for key in ("value", "ci_low", "ci_high") if self.unit == "rate" else ():
            v = getattr(self, key)
            if v is not None and not -1.0 <= v <= 1.0:   # a rate, or a difference of two rates
                raise ValueError(f"{key} {v:g} of a rate is outside [-1, 1]")
        return self


class CheckRecord(_Record):
    name: str
    fired: bool
    detail: str
    advice: str = ""


class RemedyRecord(_Record):
    name: str
    description: str
    command: str = ""


# details are a threat's own, free-form; these keys are read by the report and the diff, so they are typed
_DETAILS = {"table": (lambda v: isinstance(v, list) and all(isinstance(r, dict) for r in v), "a list of objects"),
            "notes": (lambda v: isinstance(v, list), "a list"),
            "headline_metric": (lambda v: isinstance(v, str), "a string"),
            "headline_worse": (lambda v: v in ("higher", "lower"), "'higher' or 'lower'"),
            # what a scan flags (neural-cleanse: the classes a backdoor reaches); harden says "not removed" when a
            # repair leaves any of them flagged
            "flagged": (lambda v: isinstance(v, list) and all(isinstance(c, (int, str)) for c in v),
                        "a list of class numbers or names"),
            # membership: the attack the diff compares on the audited model, and the reference models behind it
            "primary": (lambda v: isinstance(v, str), "a string"),
            "reference_models": (lambda v: v is None or (isinstance(v, dict) and all(
                isinstance(x, (str, int, float, type(None))) for x in v.values())), "null or an object of values"),
            "audited_scores": (lambda v: isinstance(v, dict) and isinstance(v.get("attack"), str)
                               and isinstance(v.get("data", ""), str) and all(
                isinstance(v.get(k), str) and _SCORES.fullmatch(v[k]) and len(v[k]) % 4 == 0
                for k in ("members", "nonmembers")) and sum(len(v[k]) for k in ("members", "nonmembers")) * 3 // 16
                <= 200_002,
                "an object with an attack name and base64 float32 members and nonmembers scores (200,000 at most)")}

_SCORES = re.compile(r"[A-Za-z0-9+/]*={0,2}")


class FindingRecord(_Record):
    threat: Annotated[str, Field(min_length=1)]
    family: str
    title: str
    status: Literal["ok", "unreliable", "failed", "skipped"]
    severity: Literal["critical", "high", "medium", "low", "info"]
    headline: str
    metrics: list[MetricRecord] = []
    checks: list[CheckRecord] = []
    evidence: list[str] = []
    seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    queries: _Count = 0
    remedy: RemedyRecord | None = None
    defense: RemedyRecord | None = None   # what reports before 0.2 called the remedy
    atlas: list[str] = []
    profile: str = "quick"
    params: dict[str, Any] = {}
    details: dict[str, Any] = {}
    error: str = ""
    timed_out: bool = False

    @field_validator("details")
    @classmethod
    def _details_read_by_the_report(cls, d: dict[str, Any]) -> dict[str, Any]:
        for key, (ok, what) in _DETAILS.items():
            if key in d and not ok(d[key]):
                raise ValueError(f"details.{key} must be {what}")
        return d


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
    timed_out: bool = False   # FAILED because it ran out of its time budget (not because it broke)
    # the files the threat wrote (path relative to the run directory -> SHA-256 of the bytes written), from the
    # write primitive (Context.evidence_path); the run records exactly these. Not part of the finding's JSON.
    written: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def grade(self) -> str:
        """What a report's severity column shows: a result's severity; for an attack that did not finish,
        'timed out' or 'failed' (its INFO is a placeholder, not a grade: reading it as one makes a threat that
        timed out before a change and finished after look like a risk that rose); '-' for a skipped threat."""
        if self.status is Status.SKIPPED:
            return "-"
        if self.status is Status.FAILED:
            return "timed out" if self.timed_out else "failed"
        return self.severity.value

    def metric(self, name: str) -> Metric:
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("written")
        d["status"] = self.status.value
        d["severity"] = self.severity.value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Finding":
        """Read a finding back (from findings/ or report.json). Anything `to_dict` would not have written (a
        field of the wrong type, a missing or unknown key, a number that is not finite, a rate outside [-1, 1],
        nesting deeper than MAX_NESTING) is a Malformed error (a ValueError) naming the field."""
        if nesting(d) > MAX_NESTING:
            raise Malformed(f"nested more than {MAX_NESTING} levels deep")
        try:
            return cls.from_record(FindingRecord.model_validate(d))
        except ValidationError as e:
            raise Malformed(first_error(e)) from None

    @classmethod
    def from_record(cls, r: FindingRecord) -> "Finding":
        remedy = r.remedy or r.defense
        return cls(r.threat, r.family, r.title, Status(r.status), Severity(r.severity), r.headline,
                   metrics=[Metric(**m.model_dump()) for m in r.metrics],
                   checks=[Check(**c.model_dump()) for c in r.checks], evidence=list(r.evidence),
                   seconds=r.seconds, queries=r.queries, remedy=Remedy(**remedy.model_dump()) if remedy else None,
                   atlas=list(r.atlas), profile=r.profile, params=dict(r.params), details=dict(r.details),
                   error=r.error, timed_out=r.timed_out)
