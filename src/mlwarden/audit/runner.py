"""Runs a plan of threats against a subject: seeds, thread policy, time budgets, on-disk cache, resume.

Run directory layout (audit/rundir.py: what the tool may delete or replace there, and how it proves it):
    run.json                 what is being audited (fingerprint checked on --resume), the files the run
                             created and their proofs
    findings/<threat>.json   one finding per threat, written atomically when the threat ends
    evidence/<threat>/...    figures and artefacts a finding points to
    report.{json,html,md,sarif}, junit.xml   written last, each atomically
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from pydantic import ValidationError

from .._version import __version__
from ..core.backend import LocalBackend, make_backend, rounds
from ..core.cache import tensor_digest
from ..core.data import Dataset, normalized
from ..core.errors import TimeBudgetExceeded, UserError
from ..core.finding import Finding, Severity, Status
from ..core.recipe import Recipe
from ..core.target import RescaledTarget, Target, TorchTarget
from ..core.threat import Context, Params, Threat
from ..report.report import FILES, Report, dumps, read_regular
from .config import describe_validation_error
from .rundir import RunDir, check_replace, claim, sha256


@dataclass
class Subject:
    target: Target
    data: Dataset
    recipe: Recipe | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        info = {k: v for k, v in self.info.items() if k != "cli"}   # how it was named, not what it is
        return {"model": {**self.target.describe(), **info}, "data": self.data.describe(),
                "input_space": self.data.space.describe(),
                "recipe": self.recipe.name if self.recipe else None}


def placed(subject: Subject, settings: dict[str, Any]) -> tuple[Subject, dict[str, Any]]:
    """The subject with its network and its recipe on the settings' device (`auto` resolved, and written
    back into the settings, so a report says where its numbers were computed)."""
    from ..core.device import resolve_device
    device = resolve_device(settings.get("device", "auto"))
    inner = subject.target.inner if isinstance(subject.target, RescaledTarget) else subject.target
    if isinstance(inner, TorchTarget):   # randomized smoothing's target too: its draws run where its network is
        inner.to_device(device)
    recipe = subject.recipe
    if device.type != "cpu" and isinstance(recipe, Recipe) and getattr(recipe, "factory", None) is not None:
        recipe = recipe.with_(device=str(device))
    return replace(subject, recipe=recipe), {**settings, "device": str(device)}


def ran_here(backend, before: int, notice: Callable[[str], None] | None) -> None:
    """Tell the user how many work items since `before` could not travel to the backend's workers."""
    if backend.ran_locally > before and notice:
        notice(f"{backend.ran_locally - before} work items could not travel to the {backend.name} backend (they hold "
               "what cannot be pickled) and ran in this process: same numbers, no speed-up")


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
        if getattr(params, "norm", None) == "linf" and getattr(params, "eps", 0) >= 1:
            raise UserError(f"{t.name}: eps {params.eps:g} covers the whole input range {subject.data.space.describe()}"
                            "; an Linf budget must be a fraction below 1")
        plan.append(Planned(t, params, t.skip_reason(dummy_ctx)))
    return plan


# Settings that change where or how the result is shown, never the numbers: not part of the fingerprint.
PRESENTATION = ("out", "fail_on", "threads", "baseline", "fail_on_regression", "backend", "workers")


def fingerprint(subject: Subject, plan: list[Planned], settings: dict) -> str:
    described = subject.describe()
    path = described["model"].get("path")
    if path:  # ./m.pt, m.pt and /abs/m.pt are one model; a retrained model at the same path is another
        described["model"]["path"] = os.path.realpath(path)
        if os.path.isfile(path):
            described["model"]["sha256"] = sha256(Path(path))
    d = subject.data
    described["data"]["digest"] = tensor_digest(d.x_train, d.y_train, d.x_test, d.y_test)
    blob = json.dumps({"subject": described,
                       "settings": {k: v for k, v in settings.items() if k not in PRESENTATION},
                       "plan": [(p.threat.name, p.params.model_dump() if p.params else None) for p in plan]},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def inputs_of(subject: Subject, settings: dict[str, Any], protect=()) -> list[str]:
    """The files a run reads (the model, the baseline, and `protect`: what the caller read, such as the data
    and the config): a run directory never loses one, whatever its run.json says (audit/rundir.py)."""
    return [str(p) for p in (*protect, subject.info.get("path"), subject.info.get("model_file"),
                             settings.get("baseline")) if p]


def run_plan(subject: Subject, plan: list[Planned], out_dir: Path, *, settings: dict[str, Any], resume: bool = False,
             backend=None, progress: Callable[[int], Callable[[str, Planned, Finding | None], None]] | None = None,
             notice: Callable[[str], None] | None = None, baseline: Report | None = None, protect=()) -> Report:
    """Run the plan, writing each finding as it ends. `progress(n_threats)` is called once the output folder
    is claimed (nothing is shown for a run refused before it starts) and returns the per-threat callback;
    `notice(text)` hears about findings that could not be reused on --resume (they are re-run). `protect`:
    files the run reads besides the model and the baseline; none is ever deleted or replaced."""
    seed, profile = settings["seed"], settings["profile"]
    out_dir = Path(out_dir)
    own_backend = backend is None   # made before the run directory is claimed: a missing extra writes nothing
    if own_backend:
        backend = make_backend(settings.get("backend", "local"), settings.get("workers"), settings.get("threads", 1))
    fp = fingerprint(subject, plan, settings)
    try:
        writes = [f"findings/{p.threat.name}.json" for p in plan] + list(FILES) + (
            ["diff.json", "diff.md"] if baseline is not None else [])
        prev = claim(out_dir, resume=resume, fingerprint=fp, inputs=inputs_of(subject, settings, protect),
                     writes=writes)
    except BaseException:
        if own_backend:
            backend.close()
        raise
    progress = progress(len(plan)) if progress else None
    run = RunDir(out_dir, {"fingerprint": fp, "settings": settings, "subject": subject.describe(),
                           "threats": [p.threat.name for p in plan], "created": prev.get("created", [])})
    run.save()
    old_threads = torch.get_num_threads()
    torch.set_num_threads(settings.get("threads", 1))
    started = time.monotonic()
    local_before = backend.ran_locally   # a shared backend (harden's) counts for every audit it served
    cache: dict = {}
    findings: list[Finding | None] = [None] * len(plan)
    budget = settings.get("time_budget_s")
    try:
        todo = []
        for i, item in enumerate(plan):
            rel = f"findings/{item.threat.name}.json"
            if resume:
                f = _reuse(out_dir, rel, item, {c["path"]: c["sha256"] for c in run.created}, notice)
                if f is not None:
                    findings[i] = f
                    if progress:
                        progress("cached", item, f)
                    continue
            todo.append(i)
        runnable = [i for i in todo if not plan[i].skip]
        if backend.workers > 1 and len(runnable) > 1:
            # independent threats side by side, each in a worker with a local backend of its own; each seeds
            # itself, so the findings are the ones a sequential run gives. Findings are written round by
            # round, so an interrupted run keeps what finished for --resume. A threat's files are recorded
            # from what its writes returned (Finding.written), never from a scan of its folder.
            for i in todo:
                if plan[i].skip:
                    findings[i] = _run_one(subject, plan[i], out_dir, seed, profile, budget, backend, cache,
                                           place=run.place)
                    _record(run, plan[i], findings[i])
            for chunk, results in rounds(backend, run_planned, runnable,
                                         (plan, subject, out_dir.absolute(), seed, profile, budget, run.place)):
                # (absolute: a worker's working directory may not be this one)
                for i, f in zip(chunk, results):
                    findings[i] = f
                    _record(run, plan[i], f)
                    if progress:
                        progress("start", plan[i], None)
                        progress("done", plan[i], f)
        else:
            for i in todo:
                item = plan[i]
                if progress:
                    progress("start", item, None)
                f = _run_one(subject, item, out_dir, seed, profile, budget, backend, cache, place=run.place)
                findings[i] = f
                _record(run, item, f)
                if progress:
                    progress("done", item, f)
    finally:
        torch.set_num_threads(old_threads)
        ran_here(backend, local_before, notice)
        if own_backend:
            backend.close()
    report = Report(subject=subject.describe(), findings=findings, settings=settings,
                    created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    seconds=time.monotonic() - started, version=__version__, run_dir=str(out_dir))
    if baseline is not None:   # diff.json and diff.md beside the report; SARIF gets baselineState
        from ..report import diff as _diff
        report.diff = _diff.diff_reports(baseline, report)
        report.baseline_states = _diff.baseline_state(report.diff)
        for name in ("diff.json", "diff.md"):
            run.check_write(out_dir / name)
        run.write("diff.json", dumps(report.diff))
        run.write("diff.md", _diff.markdown(report.diff))
    report.save(out_dir, guard=run.check_write, write=run.write)
    return report


def _reuse(out_dir: Path, rel: str, item: Planned, created: dict[str, str], notice) -> Finding | None:
    """A finding this run wrote before it stopped, or None (with a notice saying why) to run it again.
    `created`: the run's proven records (an edited one already stopped the run when it claimed the folder)."""
    path = out_dir / rel
    if rel not in created or not path.is_file():
        return None
    why = "changed since the run wrote it" if sha256(path) != created[rel] else None
    try:
        f = Finding.from_dict(json.loads(read_regular(path).decode("utf-8")))
        if f.threat != item.threat.name:
            why = f"holds a finding of '{f.threat}'"
    except (OSError, UserError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        why = f"is not readable JSON ({type(e).__name__})"
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        why = f"is not a finding ({type(e).__name__}: {str(e)[:80]})"
    if why is None:
        return f
    if notice:
        notice(f"{path}: {why}; running {item.threat.name} again")
    return None


def _record(run: RunDir, item: Planned, f: Finding) -> None:
    """Write the finding and record the evidence files its threat wrote: exactly those its writes returned,
    with the SHA-256 of the bytes written (a file someone else put in its folder is never recorded)."""
    base = f"evidence/{item.threat.name}/"
    for rel, digest in sorted(f.written.items()):
        if rel.startswith(base) and ".." not in rel.split("/"):
            run.record(rel, digest, save=False)
    run.write(f"findings/{item.threat.name}.json", dumps(f.to_dict()))


def run_planned(i: int, shared) -> Finding:
    """Planned threat i as a backend work item (a pure function of the index and the shared plan and subject)."""
    plan, subject, out_dir, seed, profile, budget, place = shared
    return _run_one(subject, plan[i], out_dir, seed, profile, budget, LocalBackend(), {}, place=place)


def _run_one(subject, item: Planned, out_dir, seed, profile, budget, backend, cache, place=None) -> Finding:
    t = item.threat
    if item.skip:
        return Finding(t.name, t.family, t.title, Status.SKIPPED, Severity.INFO, f"skipped: {item.skip}",
                       atlas=list(t.atlas), profile=profile)
    target, data = subject.target, subject.data
    per_feature = t.family == "model-tricking" and data.space.per_feature
    if per_feature:   # tabular evasion: eps is a fraction of each feature's range, not of one global range
        s = data.space
        target, data = RescaledTarget(target, s.feature_low, s.feature_high, s.integer), normalized(data)
    ctx = Context(target=target, data=data, evidence_dir=out_dir / "evidence" / t.name,
                  recipe=subject.recipe, seed=seed, profile=profile, time_budget_s=budget,
                  backend=backend or LocalBackend(), cache=cache,
                  guard=functools.partial(check_replace, Path(out_dir)),   # evidence replaces only its own files
                  place=place)   # and is written relative to the folder the run claimed
    seed_everything(seed)
    q0 = subject.target.queries
    t0 = time.monotonic()
    try:
        f = t.run(ctx, item.params)
    except TimeBudgetExceeded as e:
        f = t.finding(ctx, item.params, status=Status.FAILED, severity=Severity.INFO,
                      headline=f"attack did not finish: {e}", error=str(e), timed_out=True)
    except (KeyboardInterrupt, UserError):
        raise
    except Exception as e:  # noqa: BLE001 - an attack that failed is reported as failed, never dropped
        f = t.finding(ctx, item.params, status=Status.FAILED, severity=Severity.INFO,
                      headline=f"attack failed: {type(e).__name__}: {e}", error=f"{type(e).__name__}: {e}")
    f.written = dict(ctx.written)
    f.seconds = time.monotonic() - t0
    f.queries = max(f.queries, subject.target.queries - q0)
    if per_feature and "eps" in f.params and f.status is not Status.SKIPPED:
        s = subject.data.space
        f.headline += "; eps is a fraction of each feature's own range"
        f.details["per_feature_budget"] = {
            "rule": f"eps x (high - low) of each feature, its range {s.feature_rule}" + (
                f"; integer-valued features ({s.integer_rule}) are rounded" if bool(s.integer.any()) else ""),
            "eps": f.params["eps"], "norm": f.params.get("norm"),
            "feature_ranges": [[float(lo), float(hi)] for lo, hi in zip(s.feature_low, s.feature_high)],
            "budget": [float(b) for b in s.feature_budget(f.params["eps"])],
            "integer_features": [i for i, v in enumerate(s.integer.tolist()) if v]}
    refused = refused_remedy(f.remedy, subject.recipe) if f.remedy else None
    if refused:   # a network-only defence for a model retrained as itself: no command that would exit 2
        f.remedy = replace(f.remedy, description=f"{f.remedy.description} Not for this model: {refused}.", command="")
    elif f.remedy and f.remedy.command.startswith("mlwarden harden") and subject.info.get("cli"):
        f.remedy.command += " " + subject.info["cli"]   # the exact command for this subject
    return f


def refused_remedy(remedy, recipe) -> str | None:
    """Why the remedy's `harden --defense NAME` cannot harden a model retrained as itself (a scikit-learn
    estimator or a booster, io/estimator_recipe.py), in the words harden would refuse it with; None when it can."""
    import re

    from ..core.registry import all_defenses
    found = re.search(r"--defense (\S+)", remedy.command or "")
    if not found or not getattr(recipe, "as_itself", False):
        return None
    names = found.group(1).split(",")
    why = [f"{n} {all_defenses()[n].needs_network()}" for n in names if n in all_defenses()
           and all_defenses()[n].needs_network()]
    return "; ".join(why) + f"; {recipe.model_kind} is retrained as itself" if why else None


def write_refused(scan: dict, out_dir: Path, *, settings: dict[str, Any], subject: dict[str, Any],
                  protect=()) -> Report:
    """The complete report of an audit that stopped at the model file: its one finding is the file scan."""
    from ..threats.corruption.unsafe_file import scan_finding
    out_dir = Path(out_dir)
    rel = "findings/unsafe-model-file.json"
    claim(out_dir, resume=False, fingerprint="", writes=[rel, *FILES],
          inputs=[*protect, scan.get("path"), settings.get("baseline")])
    run = RunDir(out_dir, {"fingerprint": "refused", "settings": settings, "subject": subject,
                           "threats": ["unsafe-model-file"]})
    finding = scan_finding(scan, settings.get("profile", "quick"), refused=True)
    run.write(rel, dumps(finding.to_dict()))
    report = Report(subject=subject, findings=[finding], settings=settings,
                    created=datetime.now(timezone.utc).isoformat(timespec="seconds"), seconds=scan["seconds"],
                    version=__version__, run_dir=str(out_dir))
    report.save(out_dir, guard=run.check_write, write=run.write)
    return report


def run_audit(subject: Subject, out_dir: Path, *, settings: dict[str, Any], threats: list[str] | None = None,
              overrides: dict[str, dict] | None = None, resume: bool = False, backend=None,
              progress: Callable[[int], Callable] | None = None, notice: Callable[[str], None] | None = None,
              baseline: Report | None = None, protect=()) -> Report:
    """One audit, as the CLI, the Python API and harden all run it: pick the threats (names or families;
    the default audit's when none), validate every parameter, run the plan, write the report.
    `progress(n_threats)` returns the per-threat callback; `protect`: files the run reads besides the model
    and the baseline (data, config), never deleted or replaced."""
    from ..core.registry import get_threats
    names = threats if threats is not None else settings.get("threats")
    if not names and getattr(subject.recipe, "federated", False):   # a federation's audit: its malicious clients
        names = ["federated"]
    chosen = get_threats(names)
    subject, settings = placed(subject, settings)
    plan = make_plan(subject, chosen, settings["profile"], overrides or {}, settings.get("eps"), Path(out_dir))
    return run_plan(subject, plan, Path(out_dir), settings=settings, resume=resume, backend=backend,
                    progress=progress, notice=notice, baseline=baseline, protect=protect)
