"""SARIF 2.1.0 output, so code-scanning UIs list the findings."""
from __future__ import annotations

from ..core.finding import Severity, Status

LEVEL = {Severity.CRITICAL: "error", Severity.HIGH: "error", Severity.MEDIUM: "warning",
         Severity.LOW: "note", Severity.INFO: "none"}
SCORE = {Severity.CRITICAL: "9.5", Severity.HIGH: "8.0", Severity.MEDIUM: "5.5", Severity.LOW: "2.0",
         Severity.INFO: "0.0"}


def render(report, states: dict[str, str] | None = None) -> dict:
    """`states` (threat -> new | unchanged | updated | absent) adds SARIF's baselineState, so code-scanning
    UIs show what changed since the baseline; absent threats become results of their own."""
    states = states if states is not None else getattr(report, "baseline_states", None)
    ran = [f for f in report.findings if f.status is not Status.SKIPPED]
    rules, results = [], []
    location = report.subject.get("model", {}).get("path") or "model"
    for f in ran:
        rules.append({
            "id": f.threat, "name": f.threat.replace("-", " ").title().replace(" ", ""),
            "shortDescription": {"text": f.title},
            "fullDescription": {"text": f"{f.family}: {f.title}. MITRE ATLAS {', '.join(f.atlas)}."},
            "help": {"text": f.remedy.description if f.remedy else "See the mlwarden report."},
            "properties": {"tags": ["security", "machine-learning", f.family, *f.atlas],
                           "security-severity": SCORE[f.severity]},
        })
        results.append({
            "ruleId": f.threat, "level": LEVEL[f.severity],
            "message": {"text": f"[{f.severity.value}/{f.status.value}] {f.headline}"},
            "locations": [{"physicalLocation": {"artifactLocation": {"uri": location}}}],
            "properties": {"metrics": {m.name: m.value for m in f.metrics}, "status": f.status.value},
            **({"baselineState": states.get(f.threat, "new")} if states is not None else {}),
        })
    for threat, state in (states or {}).items():
        if state == "absent":
            rules.append({"id": threat, "shortDescription": {"text": threat}})
            results.append({"ruleId": threat, "level": "none", "baselineState": "absent",
                            "message": {"text": f"{threat}: in the baseline, not in this audit"},
                            "locations": [{"physicalLocation": {"artifactLocation": {"uri": location}}}]})
    return {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json", "version": "2.1.0",
        "runs": [{"tool": {"driver": {"name": "mlwarden", "version": report.version,
                                      "informationUri": "https://github.com/mlwarden/mlwarden", "rules": rules}},
                  "results": results}],
    }
