"""The Report: everything one audit found, and the files it is written to."""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..core.errors import UserError
from ..core.files import open_regular, read_regular  # noqa: F401 - where run files are read
from ..core.finding import Finding, Severity, Status

SCHEMA = "mlwarden.report/1"
FILES = ("report.json", "report.html", "report.md", "report.sarif", "junit.xml")


def finite(obj: Any) -> Any:
    """The object with every non-finite number (inf, nan) replaced by None, so that the JSON written is
    valid JSON (Python's `Infinity` and `NaN` are not) and says "no value" rather than a made-up one."""
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, (str, int)):
        return obj
    try:
        value = float(obj)
    except (TypeError, ValueError):
        return obj
    return value if math.isfinite(value) else None


def dumps(obj: Any, indent: int | None = 2) -> str:
    """JSON for every file mlwarden writes: finite numbers only (strict parsers accept it)."""
    return json.dumps(finite(obj), indent=indent, default=lambda v: finite(float(v)), allow_nan=False)


def write_atomic(path: Path, text: str | bytes) -> str:
    """Write whole or not at all, never through a link: mlwarden's one write primitive (core/files.py
    `write_file`: a new temporary file in the same folder, renamed over the name). Returns its SHA-256."""
    from ..core.files import write_file
    return write_file(path, text)


def inside(folder: Path, path: Path) -> bool:
    """True when `path`, after following links, lies inside `folder`."""
    root = os.path.realpath(folder)
    return os.path.commonpath([root, os.path.realpath(path)]) == root


@dataclass
class Report:
    subject: dict[str, Any]
    findings: list[Finding]
    settings: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    seconds: float = 0.0
    version: str = ""
    run_dir: str | None = None
    baseline_states: dict[str, str] | None = None   # set by a comparison with a baseline (SARIF baselineState)
    diff: dict | None = None                         # that comparison (report/diff.py)

    # -- views --------------------------------------------------------------------------------
    @property
    def ran(self) -> list[Finding]:
        return [f for f in self.findings if f.status is not Status.SKIPPED]

    @property
    def skipped(self) -> list[Finding]:
        return [f for f in self.findings if f.status is Status.SKIPPED]

    def worst(self) -> Severity:
        ranked = [f.severity for f in self.ran]
        return max(ranked, key=lambda s: s.rank) if ranked else Severity.INFO

    def exit_code(self, fail_on: str | None) -> int:
        """1 when a finding is at or above `fail_on` (and only then); 3 when an attack crashed (a bug in
        mlwarden) or, with `fail_on`, did not finish (the gate cannot vouch for what it did not measure);
        0 otherwise."""
        failed = [f for f in self.ran if f.status is Status.FAILED]
        if fail_on is not None:
            limit = Severity(fail_on).rank
            if any(f.severity.rank >= limit for f in self.ran if f.status is not Status.FAILED):
                return 1
            return 3 if failed else 0
        return 3 if any(f.headline.startswith("attack failed") for f in failed) else 0

    def finding(self, threat: str) -> Finding:
        for f in self.findings:
            if f.threat == threat:
                return f
        raise KeyError(threat)

    # -- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "version": self.version, "created": self.created, "seconds": self.seconds,
                "subject": self.subject, "settings": self.settings,
                "summary": {"worst_severity": self.worst().value,
                            "counts": {s.value: sum(f.severity is s for f in self.ran) for s in Severity},
                            "ran": len(self.ran), "skipped": len(self.skipped),
                            "unreliable": sum(f.status is Status.UNRELIABLE for f in self.findings),
                            "failed": sum(f.status is Status.FAILED for f in self.findings)},
                "findings": [f.to_dict() for f in self.findings]}

    @classmethod
    def from_dict(cls, d: dict[str, Any], run_dir: str | None = None) -> "Report":
        """A report as `to_dict` wrote it; anything else is Malformed (a ValueError) naming the field (load.py)."""
        from .load import report_fields
        return cls(**report_fields(d), run_dir=run_dir)

    @classmethod
    def load(cls, run_dir: str | Path) -> "Report":
        p = Path(run_dir)
        path = p / "report.json" if p.is_dir() else p
        if not os.path.lexists(path):
            raise UserError(f"no report.json in {run_dir}")
        if p.is_dir() and os.path.islink(path) and os.path.commonpath(
                [os.path.realpath(p), os.path.realpath(path)]) != os.path.realpath(p):
            raise UserError(f"{path}: a symbolic link to {os.path.realpath(path)}, outside the run folder {p}; "
                            "refused (name the file itself)")
        try:
            d = json.loads(read_regular(path).decode("utf-8"))
        except (ValueError, RecursionError) as e:   # JSONDecodeError, UnicodeDecodeError, a 5,000-digit number
            raise UserError(f"{path}: not valid JSON ({type(e).__name__}: {str(e)[:200]})") from None
        try:
            return cls.from_dict(d, run_dir=str(path.parent))
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"{path}: not an mlwarden report ({type(e).__name__}: {e})") from None

    def save(self, out_dir: str | Path | None = None, *, guard: Callable[[Path], None] | None = None,
             names: tuple[str, ...] = FILES, write: Callable[[str, str], Any] | None = None) -> dict[str, Path]:
        """Write report.json, .html, .md, .sarif and junit.xml (or those of them in `names`); each file appears
        whole or not at all. `guard(path)` raises when a file may not be replaced (a run directory's rule);
        every file is checked before the first is written, so a refused save writes nothing. `write(name, text)`
        writes one (a run directory's `RunDir.write`, which records it); by default `write_atomic`."""
        from . import html, junit, markdown, sarif
        out = Path(out_dir or self.run_dir or ".")
        render = {"report.json": lambda: dumps(self.to_dict()),
                  "report.html": lambda: html.render(self, out),
                  "report.md": lambda: markdown.render(self),
                  "report.sarif": lambda: dumps(sarif.render(self)),
                  "junit.xml": lambda: junit.render(self)}
        if guard is not None:
            for name in names:
                guard(out / name)
        texts = {name: render[name]() for name in names}
        paths = {}
        for name, text in texts.items():
            if write is not None:
                write(name, text)
            else:
                write_atomic(out / name, text)
            paths[name] = out / name
        self.run_dir = str(out)
        return paths

    def _repr_html_(self) -> str:
        from . import html
        return html.render(self, Path(self.run_dir) if self.run_dir else None, fragment=True)

    def summary_rows(self) -> list[tuple[str, str, str, str]]:
        return [(f.threat, f.status.value, f.grade, f.headline)
                for f in self.findings]
