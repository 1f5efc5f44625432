"""Markdown report: the same content as the HTML, for pull requests and terminals."""
from __future__ import annotations

from ..core.finding import Status


def md(value) -> str:
    """Text from a report (names, headlines, details) as inert Markdown: no HTML, no table breaks."""
    return (str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")
            .replace("\n", " "))


def render(report) -> str:
    s = report.subject
    lines = [f"# mlwarden audit: {md(s.get('model', {}).get('name', 'model'))}", "",
             f"- created: {report.created}, mlwarden {report.version}, profile `{report.settings.get('profile')}`, "
             f"seed {report.settings.get('seed')}, {report.seconds:.1f} s",
             f"- model: {md(s.get('model', {}).get('kind'))} with {md(s.get('model', {}).get('access'))} access",
             f"- data: {md(s.get('data', {}).get('name'))}, input shape {md(s.get('data', {}).get('input_shape'))}, "
             f"range {md(s.get('input_space', ''))}",
             *([f"- train/test: {md(s['data']['split'])}"] if s.get("data", {}).get("split") else []),
             *([f"- classes (label 0 first): {md(', '.join(map(str, s['data']['classes'])))}"]
               if s.get("data", {}).get("classes") else []),
             *([f"- note: {md(s['model']['note'])}"] if s.get("model", {}).get("note") else []),
             *([f"- federation: {md(s['model']['federation'])}"] if s.get("model", {}).get("federation") else []),
             f"- worst severity: **{report.worst().value}**", "",
             "| threat | status | severity | result |", "|---|---|---|---|"]
    for t, st, sev, head in report.summary_rows():
        lines.append(f"| {md(t)} | {st} | {sev} | {md(head)} |")
    for f in report.findings:
        if f.status is Status.SKIPPED:
            continue
        lines += ["", f"## {md(f.title)} (`{md(f.threat)}`)", "",
                  f"**{f.grade}** ({f.status.value}): {md(f.headline)}", ""]
        if f.error:
            lines.append(f"Error: {md(f.error)}\n")
        if f.metrics:
            lines += ["| metric | value |", "|---|---|"] + [f"| {md(m.name)} | {md(m.text())} |" for m in f.metrics]
        table = f.details.get("table") or []
        table = table if isinstance(table, list) and all(isinstance(r, dict) for r in table) else []
        if table:
            keys = list(table[0])
            fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else md(v)  # noqa: E731
            lines += ["", "| " + " | ".join(md(k).replace("_", " ") for k in keys) + " |", "|---" * len(keys) + "|"]
            lines += ["| " + " | ".join(fmt(r.get(k, "")) for k in keys) + " |" for r in table]
        for note in f.details.get("notes") or []:
            lines += ["", md(note)]
        fired = [c for c in f.checks if c.fired]
        if f.checks:
            lines += ["", "Sanity checks: " + (", ".join(f"**{md(c.name)} fired**: {md(c.detail)}" for c in fired)
                                              if fired else f"{len(f.checks)} checks, none fired")]
        for ev in f.evidence:
            lines.append(f"\n![{md(ev)}]({md(ev).replace(' ', '%20').replace('(', '%28').replace(')', '%29')})")
        lines.append(f"\nCost: {f.seconds:.1f} s, {f.queries} queries. ATLAS: {', '.join(f.atlas)}. "
                     f"Profile: {f.profile}.")
        if f.remedy:
            lines.append(f"\nFix: **{md(f.remedy.name)}**. {md(f.remedy.description)}"
                         + (f" `{md(f.remedy.command)}`" if f.remedy.command else ""))
    if report.skipped:
        lines += ["", "## Skipped", ""] + [f"- `{md(f.threat)}`: {md(f.headline)}" for f in report.skipped]
    return "\n".join(lines) + "\n"
