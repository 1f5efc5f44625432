"""Reading a report.json back (`mlwarden report`, `mlwarden diff`, `audit --baseline`, a file or a URL).

A report may come from anywhere (a baseline downloaded from a CI artefact store, a file someone edited), so
every field that rendering or comparing reads is checked against what `Report.to_dict` writes before any
of it is used: a field of the wrong type, a missing or unknown key, a number that is not finite or a rate
outside [-1, 1], a threat listed twice, or nesting deeper than any report is one Malformed error naming
the field (the CLI prints it on one line and exits 2), never a crash half-way through a render or a diff.
Free-form parts (a threat's details and parameters, extra facts about the subject) are passed through;
the keys of them that the report reads are typed too."""
from __future__ import annotations

import json

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..core.errors import Malformed, first_error
from ..core.files import MAX_NESTING, nesting
from ..core.finding import Finding, FindingRecord
from .report import SCHEMA

_Finite = Annotated[float, Field(allow_inf_nan=False)]
_Count = Annotated[int, Field(ge=0, le=10**12)]


class _Facts(BaseModel):
    """Facts about the audited subject or the settings: typed where the report reads them, open beyond."""
    model_config = ConfigDict(extra="allow", strict=True)


class ModelFacts(_Facts):
    name: str | None = None
    path: str | None = None
    kind: str | None = None
    access: str | None = None
    note: str | None = None
    n_classes: _Count | None = None


class DataFacts(_Facts):
    name: str | None = None
    modality: str | None = None
    input_shape: list[_Count] | None = None
    n_classes: _Count | None = None
    n_train: _Count | None = None
    n_test: _Count | None = None
    split: str | None = None


class SubjectFacts(_Facts):
    model: ModelFacts = ModelFacts()
    data: DataFacts = DataFacts()
    input_space: str | None = None


class SettingsFacts(_Facts):
    profile: str | None = None
    seed: _Count | None = None
    fail_on: Literal["critical", "high", "medium", "low"] | None = None
    eps: _Finite | None = None
    threats: list[str] | None = None


class ReportRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)
    schema_: Literal[SCHEMA] = Field(alias="schema")
    version: str = ""
    created: str = ""
    seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    subject: SubjectFacts
    settings: SettingsFacts = SettingsFacts()
    summary: dict[str, Any] | None = None   # recomputed from the findings on every save; only its type is checked
    findings: list[FindingRecord]

    @field_validator("findings")
    @classmethod
    def _one_finding_per_threat(cls, fs: list[FindingRecord]) -> list[FindingRecord]:
        seen: set[str] = set()
        for f in fs:
            if f.threat in seen:
                raise ValueError(f"threat '{f.threat}' has two findings")
            seen.add(f.threat)
        return fs


def validate_report(d: Any) -> ReportRecord:
    """The report as `Report.to_dict` writes it, or Malformed (a ValueError) naming the first field that is not."""
    if not isinstance(d, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
        raise Malformed(f"the document is {kind.get(type(d), 'null')}, not an object")
    if d.get("schema") != SCHEMA:
        raise Malformed(f"schema {str(d.get('schema'))[:80]!r} is not {SCHEMA!r}")
    if nesting(d) > MAX_NESTING:
        raise Malformed(f"nested more than {MAX_NESTING} levels deep")
    try:   # JSON's \ud800 escapes decode to lone surrogates, which no text holds (and no file or terminal takes)
        json.dumps(d, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise Malformed("a string holds a lone surrogate (\\ud800 to \\udfff), which is not text") from None
    try:
        return ReportRecord.model_validate(d)
    except ValidationError as e:
        raise Malformed(first_error(e)) from None


def report_fields(d: Any) -> dict[str, Any]:
    """What `Report(...)` is built from, validated (strictly: nothing is converted, so subject and settings are
    passed on as they were written)."""
    r = validate_report(d)
    return {"subject": d["subject"], "settings": d.get("settings", {}),
            "findings": [Finding.from_record(f) for f in r.findings], "created": r.created, "seconds": r.seconds,
            "version": r.version}
