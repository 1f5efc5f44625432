"""One self-contained HTML file: styles inline, evidence images embedded as data URIs, no network."""
from __future__ import annotations

import base64
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from ..core.errors import UserError
from .report import inside, read_regular

_env = Environment(loader=PackageLoader("mlwarden", "report/templates"), autoescape=select_autoescape(["j2"]))


def _embed(run_dir: Path | None, rel: str) -> str | None:
    if run_dir is None:
        return None
    p = run_dir / rel
    if not p.is_file() or p.suffix.lower() != ".png" or not inside(run_dir, p):
        return None  # evidence is embedded only from inside the run directory (a report.json may lie)
    try:
        data = read_regular(p)   # a pipe put there after the check above is refused, not waited on
    except UserError:
        return None
    return "data:image/png;base64," + base64.b64encode(data).decode()


def render(report, run_dir: Path | None, fragment: bool = False) -> str:
    run_dir = Path(run_dir) if run_dir else None
    images = {ev: _embed(run_dir, ev) for f in report.findings for ev in f.evidence}
    return _env.get_template("report.html.j2").render(r=report, images=images, fragment=fragment,
                                                      summary=report.to_dict()["summary"])
