"""Markdown report: the same content as the HTML, for pull requests and terminals."""
from __future__ import annotations

from ..core.finding import Status


def render(report) -> str:
    s = report.subject
    lines = [f"# mlwarden audit: {s.get('model', {}).get('name', 'model')}", "",
             f"- created: {report.created}, mlwarden {report.version}, profile `{report.settings.get('profile')}`, "
             f"seed {report.settings.get('seed')}, {report.seconds:.1f} s",
             f"- model: {s.get('model', {}).get('kind')} with {s.get('model', {}).get('access')} access",
             f"- data: {s.get('data', {}).get('name')}, input shape {s.get('data', {}).get('input_shape')}, "
             f"range {s.get('input_space', '')}",
             f"- worst severity: **{report.worst().value}**", "",
             "| threat | status | severity | result |", "|---|---|---|---|"]
    for t, st, sev, head in report.summary_rows():
        lines.append(f"| {t} | {st} | {sev} | {head.replace('|', '/')} |")
    for f in report.findings:
        if f.status is Status.SKIPPED:
            continue
        lines += ["", f"## {f.title} (`{f.threat}`)", "",
                  f"**{f.severity.value}** ({f.status.value}): {f.headline}", ""]
        if f.error:
            lines.append(f"Error: {f.error}\n")
        if f.metrics:
            lines += ["| metric | value |", "|---|---|"] + [f"| {m.name} | {m.text()} |" for m in f.metrics]
        table = f.details.get("table") or []
        if table:
            keys = list(table[0])
            fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
            lines += ["", "| " + " | ".join(k.replace("_", " ") for k in keys) + " |", "|---" * len(keys) + "|"]
            lines += ["| " + " | ".join(fmt(r[k]) for k in keys) + " |" for r in table]
        for note in f.details.get("notes") or []:
            lines += ["", note]
        fired = [c for c in f.checks if c.fired]
        if f.checks:
            lines += ["", "Sanity checks: " + (", ".join(f"**{c.name} fired**: {c.detail}" for c in fired)
                                              if fired else f"{len(f.checks)} checks, none fired")]
        for ev in f.evidence:
            lines.append(f"\n![{ev}]({ev})")
        lines.append(f"\nCost: {f.seconds:.1f} s, {f.queries} queries. ATLAS: {', '.join(f.atlas)}. "
                     f"Profile: {f.profile}.")
        if f.remedy:
            lines.append(f"\nFix: **{f.remedy.name}**. {f.remedy.description}"
                         + (f" `{f.remedy.command}`" if f.remedy.command else ""))
    if report.skipped:
        lines += ["", "## Skipped", ""] + [f"- `{f.threat}`: {f.headline}" for f in report.skipped]
    return "\n".join(lines) + "\n"
