"""The before/after comparison that `mlwarden harden` writes (harden.json, harden.md, harden.html)."""
from __future__ import annotations

import html as _html

from ..core.finding import Status


KEY_METRICS = ("loss AUC", "lira-online AUC", "rmia-online AUC", "loss TPR at 1% FPR", "lira-online TPR at 1% FPR",
               "rmia-online TPR at 1% FPR", "lira-online TPR at 0.1% FPR", "canaries extracted")


def _key(name: str) -> bool:
    return name in KEY_METRICS or name.startswith("exposure, ")


def compare(before, after) -> list[dict]:
    """The severity and the key metrics of every threat that ran in both audits (full reports hold the rest)."""
    rows = []
    after_by = {f.threat: f for f in after.findings}
    for fb in before.findings:
        fa = after_by.get(fb.threat)
        if fa is None or fb.status is Status.SKIPPED:
            continue
        rows.append({"threat": fb.threat, "metric": "severity", "before": fb.severity.value,
                     "after": fa.severity.value})
        ma = {m.name: m for m in fa.metrics}
        for m in fb.metrics:
            if m.name in ma and _key(m.name):
                rows.append({"threat": fb.threat, "metric": m.name, "before": m.text(), "after": ma[m.name].text()})
    return rows


def rows(s: dict) -> list[tuple[str, str, str]]:
    p, a = s["privacy"], s["accuracy"]
    ora = p["one_run_audit"]
    out = [("test accuracy", f"{100 * a['before']:.1f}% (n={a['n']})", f"{100 * a['after']:.1f}% (n={a['n']})"),
           ("epsilon (accountant, " + p["accountant"] + ")", "none (not private)",
            f"{p['epsilon_spent']:.3g} at delta {p['delta']:.2g} (target {p['target_epsilon']:g})"),
           ("empirical epsilon, 95% lower bound (one-run audit)",
            f"{ora['before']['epsilon_lower_bound']:.3g} ({ora['before']['correct']}/{ora['before']['guesses']} guesses, "
            f"m={ora['before']['m']})",
            f"{ora['after']['epsilon_lower_bound']:.3g} ({ora['after']['correct']}/{ora['after']['guesses']} guesses, "
            f"m={ora['after']['m']})")]
    out += [(f"{r['threat']}: {r['metric']}", r["before"], r["after"]) for r in s["findings"]]
    return out


def facts(s: dict) -> list[str]:
    p = s["privacy"]
    out = [f"DP-SGD: noise multiplier {p['noise_multiplier']:.3f}, sampling rate {p['sample_rate']:.4f}, "
           f"{p['steps']} steps, clipping norm {p['max_grad_norm']:g}, accountant {p['accountant']}, "
           f"training {p['training_s']:.1f} s.",
           f"Unit of privacy: {p['unit']}. A record that occurs k times is protected only at group level "
           "(about k * epsilon): deduplicate secrets before training.",
           "The one-run lower bound (Steinke et al. 2023) is an empirical floor on the epsilon the training "
           "run actually has; it is expected to sit well below the accountant's epsilon."]
    for threat, head in s.get("headlines", {}).get("after", {}).items():
        out.append(f"After: {threat}: {head}.")
    out += s.get("notes", [])
    if p.get("fixed_layers"):
        out.append("Layers replaced for DP-SGD: " + "; ".join(p["fixed_layers"]))
    if p.get("pipeline_bug"):
        out.insert(0, "BUG: the empirical lower bound exceeds the accountant's epsilon, so the DP training "
                      "pipeline does not deliver the privacy it claims.")
    return out


def markdown(s: dict) -> str:
    lines = ["# mlwarden harden: DP-SGD", "", "| | before | after |", "|---|---|---|"]
    lines += [f"| {k} | {b} | {a} |" for k, b, a in rows(s)]
    lines += [""] + [f"- {f}" for f in facts(s)]
    lines += ["", f"Full audits: [{s['before_dir']}/report.html]({s['before_dir']}/report.html), "
                  f"[{s['after_dir']}/report.html]({s['after_dir']}/report.html)", ""]
    return "\n".join(lines)


def html(s: dict) -> str:
    e = _html.escape
    table = "".join(f"<tr><td>{e(k)}</td><td>{e(str(b))}</td><td>{e(str(a))}</td></tr>" for k, b, a in rows(s))
    items = "".join(f"<li>{e(f)}</li>" for f in facts(s))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>mlwarden harden</title><style>"
            "body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}"
            "table{border-collapse:collapse;width:100%}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
            "th{background:#f3f3f3}</style></head><body><h1>mlwarden harden: DP-SGD</h1>"
            f"<table><tr><th></th><th>before</th><th>after</th></tr>{table}</table><ul>{items}</ul>"
            f"<p>Full audits: <a href='{s['before_dir']}/report.html'>before</a>, "
            f"<a href='{s['after_dir']}/report.html'>after</a></p></body></html>")
