"""Runs a plan of threats against a subject: seeds, thread policy, time budgets, on-disk cache, resume.

Run directory layout:
    run.json                 what is being audited (fingerprint checked on --resume)
    findings/<threat>.json   one finding per threat, written atomically when the threat ends
    evidence/<threat>/...    figures and artefacts a finding points to
    report.{json,html,md,sarif}, junit.xml   written last, each atomically
"""
from __future__ import annotations

import hashlib
import json
import random
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from pydantic import ValidationError

from .. import __version__
from ..core.data import Dataset
from ..core.errors import TimeBudgetExceeded, UserError
from ..core.finding import Finding, Severity, Status
from ..core.recipe import Recipe
from ..core.target import Target
from ..core.threat import Context, Params, Threat
from ..report.report import Report, write_atomic
from .config import describe_validation_error


class LocalBackend:
    """Runs independent work items in this process. The seam where a Ray backend plugs in."""

    name = "local"

    def map(self, fn: Callable, items: list) -> list:
        return [fn(i) for i in items]


@dataclass
class Subject:
    target: Target
    data: Dataset
    recipe: Recipe | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {"model": {**self.target.describe(), **self.info}, "data": self.data.describe(),
                "input_space": self.data.space.describe(),
                "recipe": self.recipe.name if self.recipe else None}


@dataclass
class Planned:
    threat: Threat
    params: Params | None
    skip: str | None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_plan(subject: Subject, threats: list[Threat], profile: str, overrides: dict[str, dict],
              eps: float | None, run_dir: Path) -> list[Planned]:
    """Validate every threat's parameters before anything runs, so a bad value costs no compute."""
    dummy_ctx = Context(target=subject.target, data=subject.data, evidence_dir=Path(run_dir) / "evidence",
                        recipe=subject.recipe)
    from ..core.registry import all_threats
    unknown = set(overrides) - set(all_threats())
    if unknown:
        raise UserError(f"config [threats] names unknown threats: {', '.join(sorted(unknown))}")
    plan = []
    for t in threats:
        ov = dict(overrides.get(t.name, {}))
        if eps is not None and "eps" in t.Params.model_fields and "eps" not in ov:
            ov["eps"] = eps
        try:
            params = t.params_for(profile, ov)
        except ValidationError as e:
            raise UserError(describe_validation_error(f"threats.{t.name}", e)) from None
        plan.append(Planned(t, params, t.skip_reason(dummy_ctx)))
    return plan


def fingerprint(subject: Subject, plan: list[Planned], settings: dict) -> str:
    blob = json.dumps({"subject": subject.describe(), "settings": settings,
                       "plan": [(p.threat.name, p.params.model_dump() if p.params else None) for p in plan]},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_plan(subject: Subject, plan: list[Planned], out_dir: Path, *, settings: dict[str, Any], resume: bool = False,
             backend=None, progress: Callable[[str, Planned, Finding | None], None] | None = None) -> Report:
    seed, profile = settings["seed"], settings["profile"]
    out_dir = Path(out_dir)
    fp = fingerprint(subject, plan, settings)
    findings_dir = out_dir / "findings"
    run_json = out_dir / "run.json"
    if resume and run_json.exists():
        prev = json.loads(run_json.read_text())
        if prev.get("fingerprint") != fp:
            raise UserError(f"{out_dir} holds a different audit (model, data or settings changed); "
                            "drop --resume or choose another --out")
    else:
        for sub in ("findings", "evidence"):
            shutil.rmtree(out_dir / sub, ignore_errors=True)
    findings_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(run_json, json.dumps({"fingerprint": fp, "settings": settings, "subject": subject.describe(),
                                       "threats": [p.threat.name for p in plan]}, indent=2, default=str))
    old_threads = torch.get_num_threads()
    torch.set_num_threads(settings.get("threads", 1))
    started = time.monotonic()
    cache: dict = {}
    findings = []
    try:
        for item in plan:
            path = findings_dir / f"{item.threat.name}.json"
            if resume and path.exists():
                f = Finding.from_dict(json.loads(path.read_text()))
                findings.append(f)
                if progress:
                    progress("cached", item, f)
                continue
            if progress:
                progress("start", item, None)
            f = _run_one(subject, item, out_dir, seed, profile, settings.get("time_budget_s"), backend, cache)
            write_atomic(path, json.dumps(f.to_dict(), indent=2, default=float))
            findings.append(f)
            if progress:
                progress("done", item, f)
    finally:
        torch.set_num_threads(old_threads)
    report = Report(subject=subject.describe(), findings=findings, settings=settings,
                    created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    seconds=time.monotonic() - started, version=__version__, run_dir=str(out_dir))
    report.save(out_dir)
    return report


def _run_one(subject, item: Planned, out_dir, seed, profile, budget, backend, cache) -> Finding:
    t = item.threat
    if item.skip:
        return Finding(t.name, t.family, t.title, Status.SKIPPED, Severity.INFO, f"skipped: {item.skip}",
                       atlas=list(t.atlas), profile=profile)
    ctx = Context(target=subject.target, data=subject.data, evidence_dir=out_dir / "evidence" / t.name,
                  recipe=subject.recipe, seed=seed, profile=profile, time_budget_s=budget,
                  backend=backend or LocalBackend(), cache=cache)
    seed_everything(seed)
    q0 = subject.target.queries
    t0 = time.monotonic()
    try:
        f = t.run(ctx, item.params)
    except TimeBudgetExceeded as e:
        f = t.finding(ctx, item.params, status=Status.FAILED, severity=Severity.INFO,
                      headline=f"attack did not finish: {e}", error=str(e))
    except (KeyboardInterrupt, UserError):
        raise
    except Exception as e:  # noqa: BLE001 - an attack that failed is reported as failed, never dropped
        f = t.finding(ctx, item.params, status=Status.FAILED, severity=Severity.INFO,
                      headline=f"attack failed: {type(e).__name__}: {e}", error=f"{type(e).__name__}: {e}")
    f.seconds = time.monotonic() - t0
    f.queries = max(f.queries, subject.target.queries - q0)
    return f
