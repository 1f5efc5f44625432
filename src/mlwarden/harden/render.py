"""The before/after report of `mlwarden harden` (harden.json, .md, .html): a verdict line first (risk
removed against accuracy and time spent), overlaid plots, the trade-off curve of a sweep, and for every
number a sanity check flagged, the reason in words."""
from __future__ import annotations

import base64
import html as _html
import re
from pathlib import Path

from ..core.finding import Finding, Status
from ..report.diff import rate_change
from ..report.headline import paired
from ..report.report import Report, inside

SCHEMA = "mlwarden.harden/2"


def _reasons(f: Finding) -> list[str]:
    """Why a number is not a result, in the words of the checks that fired, and what to do."""
    fired = [c for c in f.checks if c.fired]
    return [f"{c.name}: {c.detail}" + (f" {c.advice}" if getattr(c, "advice", "") else "") for c in fired] or \
        ([f.headline] if f.status is Status.FAILED else [])


def compare(before: Report, after: Report) -> list[dict]:
    rows = []
    after_by = {f.threat: f for f in after.findings}
    for fb in before.findings:
        fa = after_by.get(fb.threat)
        if fa is None or fb.status is Status.SKIPPED or fa.status is Status.SKIPPED:
            continue
        hb, ha = paired(fb, fa)
        change = rate_change(hb, ha)   # as `mlwarden diff` calls a regression: the change's 95% interval
        # what a scan flags, compared only when it finished on both sides (a scan that timed out flags nothing)
        both = all(f.status in (Status.OK, Status.UNRELIABLE) for f in (fb, fa))
        was, now = (f.details.get("flagged") if both and isinstance(f.details.get("flagged"), list) else []
                    for f in (fb, fa))
        kept, cleared = [c for c in was if c in now], [c for c in was if c not in now]
        new = [c for c in now if c not in was]
        rows.append({"threat": fb.threat, "severity": [fb.grade, fa.grade],   # 'timed out' is no severity
                     "status": [fb.status.value, fa.status.value], "before": hb, "after": ha,
                     "change": change.get("change"), "worse": change["regression"], "better": change["improvement"],
                     "incomparable": change.get("incomparable"),   # why the change could not be judged
                     "still_flagged": kept,   # what a scan flagged before and still flags after: not removed
                     "no_longer_flagged": cleared,   # what it stopped flagging: not proof of removal
                     "newly_flagged": new,           # what it flags only after the defence
                     "unreliable_after": _reasons(fa) if fa.status is not Status.OK else []})
    return rows


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def worse(point: dict) -> list[str]:
    """The threats whose headline the defence made worse beyond noise (the 95% interval of the change excludes
    zero in the worse direction, both numbers reliable)."""
    return [r["threat"] for r in point["comparison"] if r.get("worse")]


def verdict(point: dict, before_acc: dict) -> str:
    risks = []
    for r in point["comparison"]:
        hb, ha = r["before"], r["after"]
        if not hb or not ha:
            continue
        chance = f" (chance {_pct(hb['chance'])})" if hb["chance"] is not None else ""
        tag = " WORSE" if r.get("worse") else "" if ha["reliable"] else " [unreliable, see below]"
        kept, cleared = r.get("still_flagged"), r.get("no_longer_flagged")
        tag += f" (still flags {', '.join(map(str, kept))}: not removed)" if kept else ""
        tag += (f" (no longer flags {', '.join(map(str, cleared))}: a scan that stops finding a trigger does not "
                "show the backdoor is gone; test the repaired model with the trigger if you have it)" if cleared else "")
        tag += f" (newly flags {', '.join(map(str, r['newly_flagged']))})" if r.get("newly_flagged") else ""
        risks.append(f"{r['threat']}: {hb['label']} {_fmt(hb)} -> {_fmt(ha)}{chance}{tag}")
    ch = point["accuracy_change"]
    ratio = [ev["training_time_ratio"] for ev in point["evaluation"].values() if "training_time_ratio" in ev]
    cost = (f"accuracy {_pct(before_acc['value'])} -> {_pct(point['accuracy']['value'])} "
            f"({100 * ch['points']:+.1f} points, 95% CI {100 * ch['ci_low']:+.1f} to {100 * ch['ci_high']:+.1f}; "
            f"n={point['accuracy']['n']}), training {point['training_s']:.{1 if point['training_s'] < 10 else 0}f} s"
            + (f" ({ratio[0]:.1f}x plain training)" if ratio else ""))
    bad = worse(point)
    warn = (f"WORSE: the defence made {', '.join(bad)} worse (the 95% interval of the change excludes no change). "
            if bad else "")
    # what a defence guarantees, in its own words (DP-SGD: the accountant's epsilon beside the audit's bound)
    promised = "".join(f" Guarantee: {name}: {ev['guarantee']}." for name, ev in point["evaluation"].items()
                       if ev.get("guarantee"))
    return (warn + "Risk: " + ("; ".join(risks) or "no comparable finding") + "." + promised + " Cost: " + cost
            + ".")


def _fmt(h: dict) -> str:
    return _pct(h["value"]) if h["unit"] == "rate" else f"{h['value']:.3g}{(' ' + h['unit']) if h['unit'] else ''}"


# -- summary and plots -----------------------------------------------------------------------------
def summarize(subject, chosen, sweep, threats, before: Report, base_ok, results: list[dict],
              reports: list[Report], out_dir: Path, guard=None, dest=None) -> dict:
    """The harden summary; `guard(path)` raises when a plot may not be written there (audit/rundir.py);
    `dest(rel)`: the run directory's file to write a plot to (RunDir.dest: checked, written and recorded)."""
    n = len(base_ok)
    before_acc = {"value": float(base_ok.float().mean()), "n": n, "k": int(base_ok.sum())}
    for res, rep in zip(results, reports):
        res["accuracy_before"] = before_acc["value"]
        res["comparison"] = compare(before, rep)
        res["verdict"] = verdict(res, before_acc)
        res["worse"] = worse(res)
        res["unreliable"] = [{"threat": r["threat"], "reasons": r["unreliable_after"]}
                             for r in res["comparison"] if r["unreliable_after"]]
    plots = _plots(before, reports, results, sweep, out_dir, guard, dest) + [
        rel for r in results for ev in r["evaluation"].values() for rel in ev.get("plots", [])]
    return {"schema": SCHEMA, "defenses": [{"name": d.name, "kind": d.kind, "title": d.title} for d, _ in chosen],
            "sweep": vars(sweep) if sweep else None, "threats": threats, "subject": subject.describe(),
            "before": {"dir": "before", "accuracy": before_acc, "worst_severity": before.worst().value},
            "points": results, "verdict": results[-1]["verdict"] if len(results) == 1 else
            " | ".join(f"{r['label']}: {r['verdict']}" for r in results),
            "worse": sorted({t for r in results for t in r["worse"]}), "plots": plots}


def _plots(before: Report, reports: list[Report], results: list[dict], sweep, out_dir: Path,
           guard=None, dest=None) -> list[str]:
    from .. import plots
    folder = out_dir / "plots"
    made = []

    def at(name: str):
        if dest is not None:
            return dest(f"plots/{name}")
        if guard is not None:
            guard(folder / name)
        return folder / name
    runs = [("before", before)] + [(r["label"], rep) for r, rep in zip(results, reports)]

    def found(rep, threat):
        return next((f for f in rep.findings if f.threat == threat and f.status is not Status.SKIPPED), None)

    roc = {label: f.details["roc"][f.details["best"]] for label, rep in runs
           if (f := found(rep, "membership-inference")) and "roc" in f.details}
    if len(roc) > 1:
        plots.roc_overlay(at("roc-before-after.png"), roc, title="membership inference, strongest attack")
        made.append("plots/roc-before-after.png")
    curves = {label: f.details["curve"] for label, rep in runs if (f := found(rep, "whitebox-cascade"))
              and f.details.get("curve")}
    if len(curves) > 1:
        cascade = found(before, "whitebox-cascade")
        plots.curve_overlay(at("security-curve-before-after.png"), curves,
                            audited_eps=cascade.params.get("eps") if cascade else None)
        made.append("plots/security-curve-before-after.png")
    exposure = {label: f.details["table"] for label, rep in runs if (f := found(rep, "secret-sharer"))}
    if len(exposure) > 1:
        plots.exposure_overlay(at("exposure-before-after.png"), exposure)
        made.append("plots/exposure-before-after.png")
    if sweep and len(results) > 1:
        xs = [float(v) for v in sweep.values]
        acc = [r["accuracy"]["value"] for r in results]
        risk, base = {}, {"accuracy": float(results[0]["accuracy_before"])}
        for r in results:
            for c in r["comparison"]:
                if c["after"]:
                    key = f"{c['threat']}: {c['after']['label']}"
                    risk.setdefault(key, []).append(c["after"]["value"])
                    base[key] = c["before"]["value"]
        plots.tradeoff(at("tradeoff.png"), sweep.param, xs, acc,
                       {k: v for k, v in risk.items() if len(v) == len(xs)}, base)
        made.append("plots/tradeoff.png")
    return made


# -- text and HTML ---------------------------------------------------------------------------------
def rows(point: dict, before_acc: dict) -> list[tuple[str, str, str]]:
    a = point["accuracy"]
    out = [("test accuracy", f"{_pct(before_acc['value'])} (n={before_acc['n']})",
            f"{_pct(a['value'])} (n={a['n']}, 95% CI {_pct(a['ci_low'])}-{_pct(a['ci_high'])})")]
    for r in point["comparison"]:
        out.append((f"{r['threat']}: severity", r["severity"][0], r["severity"][1]))
        if r["before"] and r["after"]:
            out.append((f"{r['threat']}: {r['before']['label']}", r["before"]["text"],
                        r["after"]["text"] + (" WORSE" if r.get("worse") else "")))
    for name, ev in point["evaluation"].items():
        ob = ev.get("oblivious")
        if ob:   # what attacking the classifier alone would claim: shown only to be struck through
            out.append((f"{name}: robust accuracy if the attack ignores the defence ({ob['attack']}; not a result)",
                        "", f"~~{_pct(ob['oblivious_robust_accuracy'])} (n={ob['n']})~~"))
    return out


def facts(point: dict) -> list[str]:
    lines = []
    for name, f in point["facts"].items():
        shown = {k: v for k, v in f.items() if (not isinstance(v, (dict, list)) or v)
                 and not (isinstance(v, list) and len(v) > 8)}   # per-epoch series stay in harden.json
        lines.append(f"{name}: " + ", ".join(f"{k} {_num(v)}" for k, v in shown.items()))
    for name, ev in point["evaluation"].items():
        if "ckks" in ev:
            c = ev["ckks"]
            lines.append(f"{name}: CKKS on {c['parameters']:,} parameters, {c['clients']} clients: "
                         f"{c['bytes_per_client']:,} bytes per client against {c['plaintext_bytes_per_client']:,} in "
                         f"plaintext ({c['expansion']:.0f}x), encrypting {c['encrypt_s_per_client']:.3f} s per client, "
                         f"adding {c['sum_s']:.3f} s, decrypting {c['decrypt_s']:.3f} s; largest error of the sum "
                         f"{c['max_abs_error']:.1e}. Trust: {c['trust']}")
        if "worst_client" in ev:
            w = ev["worst_client"]
            changes = [r["after"] - r["before"] for r in ev["per_client"]]
            lines.append(f"{name}: per client with no attacker ({ev['partition']} data, {len(changes)} clients), accuracy "
                         f"on its own data changes {100 * min(changes):+.1f} to {100 * max(changes):+.1f} points; worst: "
                         f"client {w['client']} (n={w['n']}) {_pct(w['before'])} -> {_pct(w['after'])}")
        ora = ev.get("one_run_audit")
        if ora:
            lines.append(f"{name}: empirical epsilon, 95% lower bound (one-run audit, Steinke et al. 2023): "
                         f"before {ora['before']['epsilon_lower_bound']:.3g} ({ora['before']['correct']}/"
                         f"{ora['before']['guesses']} guesses), after {ora['after']['epsilon_lower_bound']:.3g} "
                         f"({ora['after']['correct']}/{ora['after']['guesses']}); it must never exceed the "
                         "accountant's epsilon")
        for row in ev.get("certified", []):
            lines.append(f"{name}: L2 radius {row['radius']:g} (Linf {row['linf_radius']:.3g}): certified "
                         f"{_pct(row['certified'])} (95% CI {_pct(row['certified_ci'][0])}-"
                         f"{_pct(row['certified_ci'][1])}), empirical under EOT-PGD {_pct(row['empirical'])} "
                         f"(n={row['n']}; abstentions count as errors)"
                         + (" CHECK FAILED: certified exceeds empirical" if row["certified_exceeds_empirical"] else ""))
        if "max_certifiable_radius" in ev:
            lines.append(f"{name}: {ev['abstained']} of {ev['n_points']} points abstained; with these draws no "
                         f"L2 radius above {ev['max_certifiable_radius']:.3g} can be certified; the audit's Linf eps "
                         f"{ev['audit_linf_eps']:g} reaches L2 {ev['audit_linf_eps_as_l2']:.3g} at a corner of its "
                         "ball, " + ("so no certificate covers it" if ev['audit_linf_eps_as_l2'] > ev['max_certifiable_radius']
                                     else "so only points certified at that radius are covered"))
        if "plain_training_s" in ev:
            lines.append(f"{name}: training took {point['training_s']:.1f} s, {ev['training_time_ratio']:.1f}x the "
                         f"{ev['plain_training_s']:.1f} s of the same recipe trained plainly on this machine")
        if "summary" in ev:   # a defence's own measurement, in its own words
            lines.append(f"{name}: {ev['summary']}")
        if ev.get("pipeline_bug"):
            lines.insert(0, f"BUG: {name}: " + ("the certified accuracy exceeds the accuracy measured under attack: "
                                                "the certificate or the smoothing pipeline is wrong."
                                                if "certified" in ev else
                                                "the empirical lower bound exceeds the accountant's epsilon: the "
                                                "training pipeline does not deliver the privacy it claims."))
    if point["model"] and point["model"].get("compared"):   # a model retrained as itself (io/estimator_recipe.py)
        m = point["model"]
        serves = f", `{m['serve']}` serves it" if m.get("serve") else ""
        lines.append(f"{m['compared']}; hardened model: {m['path']} ({m['format']}); `{m['audit']}` audits it{serves}")
    elif point["model"]:
        lines.append(f"hardened model: {point['model']['path']} ({point['model']['format']}); "
                     f"`mlwarden serve {point['model']['path']}` serves it")
    return lines


def _num(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _strike(text: str) -> str:
    """Markdown's ~~struck~~ as HTML."""
    return re.sub(r"~~(.+?)~~", r"<s>\1</s>", text)


def markdown(s: dict) -> str:
    title = " + ".join(d["name"] for d in s["defenses"])
    lines = [f"# mlwarden harden: {title}", "", f"**{s['verdict']}**", ""]
    for p in s["points"]:
        lines += [f"## {p['label']}", "", "| | before | after |", "|---|---|---|"]
        lines += [f"| {k} | {b} | {a} |" for k, b, a in rows(p, s['before']['accuracy'])]
        lines += [""] + [f"- {f}" for f in facts(p)]
        for u in p["unreliable"]:
            lines += [f"- Unreliable after hardening: {u['threat']}: " + " ".join(u["reasons"])]
        lines += ["", f"Full audits: [before/report.html](before/report.html), "
                      f"[{p['dir']}/report.html]({p['dir']}/report.html)", ""]
    lines += [f"![{p}]({p})" for p in s["plots"]]
    return "\n".join(lines) + "\n"


def html(s: dict, out_dir: Path) -> str:
    e = _html.escape
    title = " + ".join(d["name"] for d in s["defenses"])
    worse = " worse" if s.get("worse") else ""
    parts = [f"<h1>mlwarden harden: {e(title)}</h1><p class='verdict{worse}'>{e(s['verdict'])}</p>"]
    imgs = []
    for rel in s["plots"]:
        path = out_dir / rel
        if path.is_file() and inside(out_dir, path):
            imgs.append(f"<img alt='{e(rel)}' src='data:image/png;base64,"
                        f"{base64.b64encode(path.read_bytes()).decode()}'>")
    parts.append("<div class='plots'>" + "".join(imgs) + "</div>")
    for p in s["points"]:
        table = "".join(f"<tr><td>{e(k)}</td><td>{_strike(e(str(b)))}</td><td>{_strike(e(str(a)))}</td></tr>"
                        for k, b, a in rows(p, s['before']['accuracy']))
        items = "".join(f"<li>{e(f)}</li>" for f in facts(p))
        unrel = "".join(f"<li><b>{e(u['threat'])}</b>: {e(' '.join(u['reasons']))}</li>" for u in p["unreliable"])
        parts.append(f"<h2>{e(p['label'])}</h2><table><tr><th></th><th>before</th><th>after</th></tr>{table}</table>"
                     f"<ul>{items}</ul>" + (f"<div class='unrel'><b>Unreliable after hardening, and why:</b>"
                                             f"<ul>{unrel}</ul></div>" if unrel else "")
                     + f"<p>Full audits: <a href='before/report.html'>before</a>, "
                       f"<a href='{e(p['dir'])}/report.html'>{e(p['label'])}</a></p>")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>mlwarden harden</title><style>"
            "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#1b1f24}"
            "table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #d0d7de;padding:4px 8px;"
            "text-align:left}th{background:#f6f8fa}.verdict{font-size:1.15em;font-weight:600;background:#f0f7ff;"
            "border-left:4px solid #0969da;padding:8px 12px}.verdict.worse{background:#ffebe9;border-left-color:#cf222e;"
            "color:#82071e}.plots img{max-width:49%;margin:4px;"
            "border:1px solid #eaeef2}.unrel{background:#fff8c5;border-left:4px solid #bf8700;padding:6px 10px}"
            "</style></head><body>" + "".join(parts) + "</body></html>")
