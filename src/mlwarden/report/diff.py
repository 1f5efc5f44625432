"""`mlwarden diff OLD NEW` and `mlwarden audit --baseline OLD`: did this change make the model less safe?

For every threat in both reports, the headline number side by side with the change and the 95%
interval of the difference (Newcombe's interval for two independent rates, with each side's n; for
membership inference a paired bootstrap over the audited model's scores, `_membership_change`). A
regression is called only when that interval excludes zero in the worse direction, so a re-run with
another seed does not fail a build. A change of profile, eps, data, input range or a threat's parameters
makes the two numbers incomparable: the diff says so and calls no regression for that threat (or for any, when the
audit's settings changed)."""
from __future__ import annotations

from ..core.errors import UserError, printable
from ..core.finding import Status
from ..core.stats import difference_interval, paired_tpr_difference
from .headline import MEMBERSHIP, paired
from .report import Report

# Settings that change what a number means (seed, threads and output paths do not).
MEANING = ("profile", "eps")


def diff_reports(old: Report, new: Report) -> dict:
    settings = [f"{k}: {old.settings.get(k)!r} -> {new.settings.get(k)!r}" for k in MEANING
                if old.settings.get(k) != new.settings.get(k)]
    for key, label in (("name", "data"), ("input_shape", "input shape"), ("n_test", "test points")):
        a, b = old.subject.get("data", {}).get(key), new.subject.get("data", {}).get(key)
        if a != b:
            settings.append(f"{label}: {a!r} -> {b!r}")
    if old.subject.get("input_space") != new.subject.get("input_space"):
        settings.append(f"input range: {old.subject.get('input_space')!r} -> {new.subject.get('input_space')!r}")
    old_by = {f.threat: f for f in old.findings if f.status is not Status.SKIPPED}
    new_by = {f.threat: f for f in new.findings if f.status is not Status.SKIPPED}
    rows = []
    for threat in list(old_by) + [t for t in new_by if t not in old_by]:
        fo, fn = old_by.get(threat), new_by.get(threat)
        if fo is None or fn is None:
            rows.append({"threat": threat, "state": "new" if fo is None else "absent",
                         "severity": [fo.grade if fo else None, fn.grade if fn else None]})
            continue
        ho, hn = paired(fo, fn, audited=True)
        row = {"threat": threat, "state": "both", "severity": [fo.grade, fn.grade],   # 'timed out' is no severity
               "before": ho, "after": hn, "regression": False, "improvement": False}
        why = _incomparable(fo, fn, settings)
        if why:
            row["incomparable"] = why
        else:
            row.update(rate_change(ho, hn))
            if threat in MEMBERSHIP and "change" in row:
                row.update(_membership_change(fo, fn, row))
        rows.append(row)
    return {"schema": "mlwarden.diff/1", "comparable": not settings, "settings_changed": settings, "rows": rows,
            "regressions": [r["threat"] for r in rows if r.get("regression")],
            "old": {"model": old.subject.get("model", {}).get("name"), "created": old.created},
            "new": {"model": new.subject.get("model", {}).get("name"), "created": new.created}}


def rate_change(ho: dict | None, hn: dict | None) -> dict:
    """The change from one headline to the same headline of another run (report/headline.py `paired`): the
    difference of the two rates with its 95% interval (Newcombe, each side's n), and whether that interval
    excludes zero in the worse direction (`regression`) or the better one (`improvement`). A number a sanity
    check flagged, or one without a rate and sample size, calls neither and says why (`incomparable`). Shared
    by `mlwarden diff` and harden's before/after verdict."""
    out = {"regression": False, "improvement": False}
    if not (ho and hn):
        return {**out, "incomparable": "no headline number on one side: compared by severity only"}
    if ho["unit"] != "rate" or hn["unit"] != "rate":
        return {**out, "incomparable": "no interval for this metric: compared by severity only"}
    if not (_rate(ho) and _rate(hn)):
        return {**out, "incomparable": "not a rate in [0, 1] with a sample size on both sides: compared by severity "
                                       "only"}
    d, lo, hi = difference_interval(round(ho["value"] * ho["n"]), ho["n"], round(hn["value"] * hn["n"]), hn["n"])
    out["change"] = {"difference": d, "ci_low": lo, "ci_high": hi}
    if not (ho["reliable"] and hn["reliable"]):
        why = [f"{side}: {h['unreliable_why']}" for side, h in (("before", ho), ("after", hn)) if h.get("unreliable_why")]
        return {**out, "incomparable": "a sanity check flagged one of the numbers (unreliable" +
                ("; " + "; ".join(why) if why else "") + ")"}
    worse_up = ho["worse"] == "higher"
    return {**out, "regression": bool(lo > 0 if worse_up else hi < 0), "improvement": bool(hi < 0 if worse_up else lo > 0)}


def _membership_change(fo, fn, row: dict) -> dict:
    """A TPR at 1% FPR rests on the few non-members above its threshold: the binomial interval on the members
    alone calls a re-run a regression far more often than 1 in 40. The change and its interval come from a
    paired bootstrap over the audited model's scores that both reports keep (members and non-members resampled
    alike, each side's threshold set again; core/stats.py `paired_tpr_difference`); the two must have scored
    the same points (their data digest) with the same attack."""
    a, b = (_scores(f.details.get("audited_scores")) for f in (fo, fn))
    out = {"regression": False, "improvement": False, "change": None}
    usable = a and b and a[0] == b[0] and a[1] == b[1] and (len(a[2]), len(a[3])) == (len(b[2]), len(b[3]))
    if "incomparable" in row and not usable:   # already not judged, for its own reason
        return {"change": None}
    if not (a and b):
        return {**out, "incomparable": "the audited model's scores are not in both reports (a report from before "
                                       "they were kept, or over 200,000 points): the change has no honest interval"}
    if not usable:
        return {**out, "incomparable": "the two reports scored other points or with another attack"}
    d, lo, hi = paired_tpr_difference((a[2], a[3]), (b[2], b[3]))
    change = {"difference": d, "ci_low": lo, "ci_high": hi, "method": "paired bootstrap"}
    if "incomparable" in row:   # flagged unreliable: the interval is shown, nothing is judged
        return {"change": change}
    return {**out, "change": change, "regression": bool(lo > 0), "improvement": bool(hi < 0)}


def _scores(rec: dict | None):
    """(attack, data digest, member scores, non-member scores) from a report's audited_scores, or None."""
    import base64

    import numpy as np
    if not rec or not rec.get("members") or not rec.get("nonmembers"):
        return None
    try:
        m, n = (np.frombuffer(base64.b64decode(rec[k], validate=True), dtype="<f4") for k in ("members", "nonmembers"))
    except ValueError:   # binascii.Error, or a length that is no whole number of float32
        return None
    if not (np.isfinite(m).all() and np.isfinite(n).all()):
        return None
    return rec["attack"], rec.get("data"), m, n


def _rate(h: dict) -> bool:
    n, v = h.get("n"), h.get("value")
    return isinstance(n, int) and n > 0 and isinstance(v, (int, float)) and 0.0 <= v <= 1.0


def _incomparable(fo, fn, settings) -> str | None:
    if settings:
        return "the audit's settings changed (" + "; ".join(settings) + ")"
    if fo.profile != fn.profile:
        return f"profile {fo.profile} -> {fn.profile}"
    if fo.params != fn.params:
        changed = sorted(k for k in set(fo.params) | set(fn.params) if fo.params.get(k) != fn.params.get(k))
        return "parameters changed: " + ", ".join(changed)
    for side, f in (("baseline", fo), ("new run", fn)):
        if f.status is Status.FAILED:
            return f"it did not finish in the {side} ({'timed out' if f.timed_out else f.error or 'failed'})"
    if fo.threat in MEMBERSHIP:
        return _references_differ(fo.details.get("reference_models"), fn.details.get("reference_models"))
    return None


# what makes a set of reference models (privacy/reference_models.py); the seed only draws another sample of them
REFERENCES = (("recipe_key", "recipe"), ("data", "data"), ("count", "count"))


def _references_differ(a: dict | None, b: dict | None) -> str | None:
    """Membership on the audited model is calibrated by reference models trained through the recipe: with
    another recipe, other data or another number of them, the same model scores otherwise, so the two numbers
    are not compared. Models from the cache are the ones their key names, so a cache hit is the same set."""
    if a is None and b is None:   # no recipe on either side: the attacks that need none, on the model alone
        return None
    if a is None or b is None:
        return ("reference models on one side only (" + ("baseline" if a is None else "this run")
                + " has none, or its report predates their record)")
    changed = []
    for key, label in REFERENCES:
        if a.get(key) != b.get(key):
            if key == "recipe_key":
                changed.append(f"recipe {a.get('recipe')!r} -> {b.get('recipe')!r}"
                               + (" (its settings)" if a.get("recipe") == b.get("recipe") else ""))
            else:
                changed.append(f"{label} {a.get(key)!r} -> {b.get(key)!r}")
    return "the reference models differ (" + "; ".join(changed) + "), so they calibrate the attack otherwise" \
        if changed else None


def baseline_state(diff: dict) -> dict[str, str]:
    """SARIF baselineState per threat: new, unchanged, updated (a significant change or a new severity)
    or absent."""
    out = {}
    for r in diff["rows"]:
        if r["state"] != "both":
            out[r["threat"]] = r["state"]
        else:
            moved = r.get("regression") or r.get("improvement") or r["severity"][0] != r["severity"][1]
            out[r["threat"]] = "updated" if moved else "unchanged"
    return out


def load_baseline(source: str) -> Report:
    """A run directory, a report.json, or an http(s) URL of a report.json."""
    if source.lower().startswith(("http://", "https://")):
        return _fetch(source)
    return Report.load(source)


def redact(url: str) -> str:
    """The URL as messages and reports may show it: what stands before the host's last @ (user, password or
    token) and the query (presigned signatures, tokens) written as ***."""
    from urllib.parse import urlsplit, urlunsplit
    try:
        u = urlsplit(url)
    except ValueError:   # a bad port or bracket: still no user, password or query shown
        import re
        return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/]*@", r"\1***@", url.split("?")[0])
    host = u.netloc.rpartition("@")
    netloc = f"***@{host[2]}" if host[1] else u.netloc
    return urlunsplit((u.scheme, netloc, u.path, "***" if u.query else "", ""))


def _fetch(url: str, limit: int = 50 << 20) -> Report:
    """A report.json from a URL: read whole within $MLWARDEN_HTTP_DEADLINE seconds and at most `limit`
    bytes (io/net.py), then validated as a file's would be (load.py)."""
    import json

    from ..core.extras import require
    from ..io import net
    httpx = require("httpx", "serve", "a baseline URL")
    shown = redact(url)
    try:
        with net.client(timeout=30, follow_redirects=True) as http:
            r = net.exchange(http, "GET", url, what=f"baseline {shown}", limit=limit)
    except (httpx.HTTPError, httpx.InvalidURL, UnicodeError) as e:   # a bad port, control characters, IDNA
        raise UserError(f"baseline {shown}: {type(e).__name__}: {e}") from None
    if r.status != 200:
        raise UserError(f"baseline {shown}: HTTP {r.status}")
    try:
        return Report.from_dict(json.loads(r.body))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise UserError(f"baseline {shown}: not valid JSON ({type(e).__name__})") from None
    except ValueError as e:   # Malformed: the field that is not what mlwarden writes
        raise UserError(f"baseline {shown}: not an mlwarden report ({e})") from None


def _pct(h: dict | None) -> str:
    if not h:
        return "-"
    if h["value"] is None:
        return "n/a (not a finite number)"
    return f"{100 * h['value']:.1f}% (n={h['n']})" if h["unit"] == "rate" else f"{h['value']:.4g} {h['unit']}".strip()


MAX_CELL = 300   # characters of a stranger's text (a threat name, a recipe) a table cell shows


def _cell(text) -> str:
    """Text from a report (a baseline may be a stranger's) as one inert Markdown table cell: control characters
    written as escapes (no terminal sequence, no new line), the characters that make a table cell, a link or an
    image ([ ]), emphasis, code, math or HTML escaped, what GitHub turns into links or mentions (http://, www.,
    @team, #123) broken by a zero-width space, at most MAX_CELL characters."""
    text = str(text)
    if len(text) > MAX_CELL:
        text = text[:MAX_CELL] + "..."
    text = printable(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    for ch in "\\|[]*_`#~$":
        text = text.replace(ch, "\\" + ch)
    # what GitHub links after rendering (bare URLs, www., @mentions, #123): a zero-width space breaks each
    for token, broken in (("://", ":\u200b//"), ("www.", "www\u200b."), ("@", "@\u200b"), ("\\#", "\\#\u200b")):
        text = text.replace(token, broken)
    return text


def markdown(diff: dict) -> str:
    """A summary that suits a pull-request comment; every text a report supplied passes through _cell."""
    lines = ["## mlwarden: this model against its baseline", ""]
    if diff["settings_changed"]:
        lines += ["**Not comparable**: the audit's settings changed (" + _cell("; ".join(diff["settings_changed"]))
                  + "), so no regression is called.", ""]
    elif diff["regressions"]:
        lines += [f"**Regression** in {_cell(', '.join(diff['regressions']))}: the 95% interval of the change "
                  "excludes zero in the worse direction.", ""]
    else:
        lines += ["No significant regression.", ""]
    lines += ["| threat | metric | baseline | now | change (95% CI) | verdict |", "|---|---|---|---|---|---|"]
    for r in diff["rows"]:
        if r["state"] != "both":
            lines.append(f"| {_cell(r['threat'])} | | {_cell(r['severity'][0] or '-')} | "
                         f"{_cell(r['severity'][1] or '-')} | | {r['state']} |")
            continue
        c = r.get("change")
        change = (f"{100 * c['difference']:+.1f} points ({100 * c['ci_low']:+.1f} to {100 * c['ci_high']:+.1f})"
                  if c else "")
        verdict = ("**regression**" if r["regression"] else "improvement" if r["improvement"]
                   else _cell(r.get("incomparable") or "no significant change"))
        metric = _cell(r["before"]["label"]) if r["before"] else "severity"
        lines.append(f"| {_cell(r['threat'])} | {metric} | {_cell(_pct(r['before']))} ({_cell(r['severity'][0])}) | "
                     f"{_cell(_pct(r['after']))} ({_cell(r['severity'][1])}) | {change} | {verdict} |")
    return "\n".join(lines) + "\n"
