"""`mlwarden harden`, one generic path for every registered defence: audit the subject with the threats
the defences mitigate, apply the defences, save the hardened model, re-audit with the same threats and
seeds (an informed attacker: reference and shadow models train through the defended recipe), and write
the before/after report. A parameter given several values (`--param epsilon=1,2,4,8`) repeats the
apply-and-audit step for each, which traces the defence's trade-off curve."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, get_args, get_origin

import torch
from pydantic import ValidationError

from ..audit.config import describe_validation_error
from ..audit.rundir import RunDir, claim, guard, sha256
from ..audit.runner import Subject, inputs_of, ran_here, run_audit, seed_everything
from ..core.backend import LocalBackend, make_backend, rounds
from ..core.data import is_number
from ..core.defense import (RETRAINS, Defense, DefenseContext, Hardened, apply_defenses, chain, check_applicable,
                            with_inference, wrap_target)
from ..core.errors import UserError
from ..core.measure import correct, paired_difference
from ..core.finding import Metric
from ..core.registry import get_defense, get_threats
from ..io.estimator_recipe import save_fitted, save_files
from ..io.models import load_target, save_module
from ..report import sarif
from ..report.report import Report, dumps, read_regular
from ..threats.tricking.common import EvasionParams
from . import render

Chosen = list[tuple[Defense, dict[str, Any]]]
HARDEN_FILES = ("harden.json", "harden.md", "harden.html", "harden.sarif")


@dataclass
class Sweep:
    defense: str
    param: str
    values: list[Any]


@dataclass
class HardenResult:
    summary: dict
    before: Report
    after: list[Report]
    out_dir: Path

    def exit_code(self, fail_on: str | None, fail_on_regression: bool = False) -> int:
        """1 when a defence's own check caught a broken pipeline, when a hardened model still has a finding at
        or above --fail-on, or (`fail_on_regression`) when the defence made a headline worse beyond noise (the
        summary's `worse`, as `mlwarden diff` calls a regression); 0 otherwise."""
        if any(p.get("pipeline_bug") for p in self.summary["points"]):
            return 1
        if fail_on_regression and self.summary.get("worse"):
            return 1
        return max((r.exit_code(fail_on) for r in self.after), default=0)


def parse_defenses(spec: str, raw_params: list[str] | None) -> tuple[Chosen, Sweep | None]:
    """`dp-sgd,adversarial-training` and `--param [defence.]key=value[,value...]` into defences with their
    overrides, and at most one swept parameter."""
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise UserError("--defense needs a defence name; run 'mlwarden defenses' to list them")
    chosen: Chosen = [(get_defense(n), {}) for n in names]
    for d, _ in chosen:
        d.require_extras()
    sweep = None
    for item in raw_params or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--param '{item}' must look like key=value (or defence.key=value)")
        owner, _, field = key.strip().rpartition(".")
        matches = [(d, ov) for d, ov in chosen if field in d.Params.model_fields and owner in ("", d.name)]
        if not matches:
            raise UserError(f"--param {key}: no chosen defence ({', '.join(names)}) has a parameter '{field}'")
        if len(matches) > 1:
            raise UserError(f"--param {key}: several defences have '{field}'; write defence.{field}=...")
        d, ov = matches[0]
        values = [v.strip() for v in value.split(",") if v.strip()]
        if _is_list(d.Params.model_fields[field].annotation):
            ov[field] = values      # a list parameter (radii=0,0.25,0.5) takes every value, it is not a sweep
            continue
        if len(values) > 1 and not all(is_number(v) for v in values):
            raise UserError(f"--param {key}: only numbers can be swept (a trade-off curve needs an axis), got "
                            f"{value!r}")
        if len(values) > 1:
            if sweep is not None:
                raise UserError(f"--param {key}: only one parameter may take several values (already sweeping "
                                f"{sweep.param})")
            sweep = Sweep(d.name, field, values)
        else:
            ov[field] = values[0] if values else ""
    return chosen, sweep


def audit_budget(chosen: Chosen, sweep: Sweep | None, threats: list[str], settings: dict,
                 overrides: dict | None) -> tuple[dict[str, Any], dict]:
    """One perturbation budget for a defence against evasion and for the audits that judge it: the
    defence's own `--param eps/norm` when given (not swept), else the audit's (--eps, or the cascade's
    settings in the config), else the evasion threats' default. Every audited threat with an eps and a
    norm attacks at that budget (HopSkipJump's own default is L2), unless the config sets its own.
    Returns the budget (empty when no chosen defence has one) and the audit's threat overrides."""
    overrides = dict(overrides or {})
    if not any({"eps", "norm"} & set(d.Params.model_fields) for d, _ in chosen):
        return {}, overrides
    cascade = overrides.get("whitebox-cascade", {})
    defaults = EvasionParams.model_fields
    budget = {"eps": settings.get("eps") or cascade.get("eps") or defaults["eps"].default,
              "norm": cascade.get("norm") or defaults["norm"].default}
    for d, ov in chosen:
        for k in ("eps", "norm"):
            if k in ov and not (sweep and sweep.defense == d.name and sweep.param == k):
                budget[k] = ov[k]
    for t in get_threats(threats):
        if {"eps", "norm"} <= set(t.Params.model_fields):
            overrides[t.name] = {**budget, **overrides.get(t.name, {})}
    return budget, overrides


def _points(chosen: Chosen, sweep: Sweep | None, profile: str, budget: dict[str, Any] | None = None
            ) -> list[tuple[str, list]]:
    """(label, [(defence, validated params)]) for every point of the sweep; every value is validated
    before anything trains. Several aggregation rules are alternatives (a federation has one rule): each
    is a point of its own, so harden compares them under the same attacks."""
    if len(chosen) > 1 and all(d.kind == "aggregation" for d, _ in chosen):
        if sweep is not None:
            raise UserError("compare aggregation rules or sweep one parameter, not both in one run")
        out = []
        for d, ov in chosen:
            try:
                out.append((f"after-{d.name}", [(d, d.params_for(profile, ov))]))
            except ValidationError as e:
                raise UserError(describe_validation_error(f"--param ({d.name})", e)) from None
        return out
    points = []
    for value in (sweep.values if sweep else [None]):
        params = []
        for d, ov in chosen:
            over = {k: v for k, v in (budget or {}).items() if k in d.Params.model_fields}
            over.update(ov)
            if sweep and d.name == sweep.defense:
                over[sweep.param] = value
            try:
                params.append((d, d.params_for(profile, over)))
            except ValidationError as e:
                raise UserError(describe_validation_error(f"--param ({d.name})", e)) from None
        label = "after" if sweep is None else f"after-{sweep.param}={value}"
        points.append((label, params))
    return points


def mitigated_threats(chosen: Chosen) -> list[str]:
    return list(dict.fromkeys(t for d, _ in chosen for t in d.mitigates))


def harden(subject: Subject, chosen: Chosen, out_dir: Path, *, settings: dict, sweep: Sweep | None = None,
           threats: list[str] | None = None, overrides: dict | None = None, resume: bool = False,
           progress: Callable | None = None, stage: Callable[[str], None] | None = None,
           notice: Callable[[str], None] | None = None, protect=()) -> HardenResult:
    """`protect`: files the run reads besides the model and the baseline (data, config); none is ever
    deleted or replaced (audit/rundir.py)."""
    stage = stage or (lambda text: None)
    profile = settings["profile"]
    threats = threats or mitigated_threats(chosen)
    get_threats(threats)  # unknown names fail before any training
    budget, overrides = audit_budget(chosen, sweep, threats, settings, overrides)
    points = _points(chosen, sweep, profile, budget)
    for _, params in points:
        check_applicable(subject, params, subject.data)
    out_dir = Path(out_dir)
    fp = hashlib.sha256(json.dumps({"defenses": [(d.name, ov) for d, ov in chosen], "sweep": vars(sweep) if sweep
                                    else None, "threats": threats, "settings": {k: v for k, v in settings.items()
                                    if k not in ("out", "fail_on", "threads", "backend", "workers")}, "subject": subject.describe()},
                                   sort_keys=True, default=str).encode()).hexdigest()[:16]
    from ..core.device import resolve_device
    resolve_device(settings.get("device", "auto"))   # a missing GPU or extra: one line, nothing written
    backend = make_backend(settings.get("backend", "local"), settings.get("workers"), settings.get("threads", 1))
    try:
        prev = claim(out_dir, resume=resume, fingerprint=fp, inputs=inputs_of(subject, settings, protect),
                     writes=HARDEN_FILES)
    except BaseException:
        backend.close()
        raise
    run = RunDir(out_dir, {"fingerprint": fp, "command": "harden", "created": prev.get("created", [])})
    run.save()
    old_threads = torch.get_num_threads()
    torch.set_num_threads(settings.get("threads", 1))
    try:
        audit = dict(settings=settings, threats=threats, overrides=overrides, resume=resume, progress=progress,
                     notice=notice, backend=backend, protect=list(protect))
        stage(f"auditing the model as it is ({', '.join(threats)})")
        before = run_audit(subject, out_dir / "before", **audit)
        base_ok = correct(subject.target, subject.data.x_test, subject.data.y_test)
        results, reports = [], []
        applied = {}
        local_before = backend.ran_locally
        side_by_side = backend.workers > 1 and len(points) > 1 and not resume
        if side_by_side:   # a sweep's points train side by side
            stage(f"applying {len(points)} settings side by side ({backend.workers} workers)")
            ctx = DefenseContext(subject.data, out_dir.absolute(), seed=settings["seed"], profile=settings["profile"],
                                 guard=guard(out_dir.absolute()), place=run.place)
            applied = dict(zip([label for label, _ in points],
                               backend.map(apply_point, [params for _, params in points],
                                           shared=(subject, ctx, settings["seed"]))))
        if side_by_side and len(points) >= backend.workers:
            # and are audited side by side, a point per worker (with fewer points than workers, each audit
            # below spreads its threats over the workers instead); each round is saved before the next
            ready = [_prepare(subject, params, out_dir, label, settings, audit, run, stage, applied[label])
                     for label, params in points]
            stage(f"auditing {len(points)} hardened models side by side ({backend.workers} workers)")
            shared = (subject, out_dir.absolute(), {**audit, "backend": None, "progress": None, "notice": None}, None,
                      run.place)
            for chunk, done in rounds(backend, audit_point, ready, shared):
                for point, (report, evaluation, ok, written) in zip(chunk, done):
                    results.append(_finish(subject, point, evaluation, ok, out_dir, base_ok, run, written))
                    reports.append(report)
        else:
            for label, params in points:
                what = ", ".join(f"{d.name}({_short(p)})" for d, p in params)
                stage(f"applying {what}" if label not in applied else f"auditing {what}")
                point = _prepare(subject, params, out_dir, label, settings, audit, run, stage, applied.get(label))
                report, evaluation, ok, written = audit_point(point, (subject, out_dir, audit, stage, run.place))
                results.append(_finish(subject, point, evaluation, ok, out_dir, base_ok, run, written))
                reports.append(report)
        ran_here(backend, local_before, notice)
    finally:
        torch.set_num_threads(old_threads)
        backend.close()
    for name in HARDEN_FILES:   # checked before the plots and the first file are written
        run.check_write(out_dir / name)
    summary = render.summarize(subject, chosen, sweep, threats, before, base_ok, results, reports, out_dir,
                               guard=run.check_write, dest=run.dest)
    files = {"harden.json": dumps(summary), "harden.md": render.markdown(summary),
             "harden.html": render.html(summary, out_dir),
             "harden.sarif": dumps(sarif.render(reports[-1]))}
    for name, text in files.items():
        run.write(name, text)
    return HardenResult(summary, before, reports, out_dir)


def apply_point(params, shared) -> tuple[Hardened, float]:
    """One point of a sweep: the defences applied to the subject, seeded as in a sequential run, and the
    seconds it took. A pure function of (params, shared), so a backend can run a sweep's points side by side."""
    subject, ctx, seed = shared
    seed_everything(seed)
    t0 = time.monotonic()
    return apply_defenses(subject, params, ctx), time.monotonic() - t0


@dataclass
class _Point:
    """A hardened model ready for its audit: what `audit_point` needs, and the state `_finish` completes."""
    label: str
    params: list
    hardened: Hardened
    state: dict
    after: Subject


def _prepare(subject, params, out_dir: Path, label: str, settings, audit, run: RunDir, stage,
             applied: tuple[Hardened, float] | None = None) -> _Point:
    """The point's hardened model: reused on --resume, else applied (or taken from a worker) and saved."""
    seed = settings["seed"]
    ctx = DefenseContext(subject.data, out_dir, seed=seed, profile=settings["profile"], backend=audit["backend"],
                         guard=guard(out_dir), place=run.place)
    state_rel = f"hardened/{label}.json"
    state = {"params": {d.name: p.model_dump() for d, p in params}}
    reused = _reuse_hardened(subject, params, out_dir, state_rel, state, run, ctx) if audit["resume"] else None
    if reused is not None:
        hardened, state = reused
        stage(f"reusing the hardened model of the earlier run ({state['model']['path']})")
    else:
        hardened, apply_s = applied or apply_point(params, (subject, ctx, seed))
        state.update(facts=hardened.facts, training_s=hardened.training_s, apply_s=apply_s, model=None,
                     target_name=hardened.target.name)
        if hasattr(hardened.model, "to_bytes"):   # retrained as itself: saved in its library's own format
            state["model"] = save_fitted(hardened.model, out_dir / "hardened" / label.replace("after", "model"),
                                         subject, [d.name for d, _ in params], run)
        elif hasattr(hardened.model, "to_files"):   # a text filter retrained as itself: in its own format
            base = out_dir / "hardened" / label.replace("after", "model")
            state["model"] = save_files(hardened.model.to_files(base.name), base.parent, subject, hardened.model.name,
                                        [d.name for d, _ in params], run, serve=False)
        elif hardened.model is not None:
            base = out_dir / "hardened" / label.replace("after", "model")
            for suffix in (".pt2", ".safetensors"):   # save_module writes one of them
                run.check_write(base.parent / f"{base.name}{suffix}")
            state["model"] = save_module(hardened.model, subject.data, base, write=run.write)
    data = subject.data
    if any(d.kind in RETRAINS for d, _ in params) and not data.split.startswith("given"):
        # mlwarden trained the hardened model on the train part itself: its members are known, not guessed
        data = dataclasses.replace(data, split=f"given: the hardened model was trained by mlwarden on the train part "
                                               f"({data.split.split(';')[0]})")
    after = Subject(hardened.target, data, hardened.recipe or subject.recipe,
                    {**subject.info, "hardened": label, "model_file": state["model"]["path"] if state["model"] else None})
    return _Point(label, params, hardened, state, after)


def audit_point(point: _Point, shared) -> tuple[Report, dict | None, torch.Tensor, dict]:
    """The hardened model's audit, its defences' own checks (unless an earlier run saved them) and which
    test points it gets right (seeded: a smoothed model's answers are random). A pure function of (point,
    shared), so a backend can audit a sweep's points side by side: it writes the point's audit directory
    and its checks' files (named after the point), and returns what those checks wrote (relative path ->
    SHA-256, for the run to record). `shared`: (subject, out_dir, run_audit's arguments, stage, the run
    directory's Folder); a None backend there runs the audit's threats in order, here; a None stage says
    nothing."""
    subject, out_dir, audit, stage, place = shared
    stage = stage or (lambda text: None)
    audit = {**audit, "backend": audit["backend"] or LocalBackend()}
    settings = audit["settings"]
    stage(f"auditing the hardened model ({point.label})")
    report = run_audit(point.after, out_dir / point.label, **audit)
    evaluation = None
    if "evaluation" not in point.state:
        ctx = DefenseContext(subject.data, out_dir, seed=settings["seed"], profile=settings["profile"],
                             backend=audit["backend"], label=point.label, guard=guard(out_dir), place=place)
        evaluation = {}
        for d, p in point.params:
            stage(f"{d.name}: its own checks")
            ev = d.evaluate(subject, point.hardened, p, ctx)
            if ev:
                evaluation[d.name] = ev
    seed_everything(settings["seed"])
    return (report, evaluation, correct(point.hardened.target, subject.data.x_test, subject.data.y_test),
            ctx.written if evaluation is not None else {})


def _finish(subject, point: _Point, evaluation: dict | None, ok, out_dir: Path, base_ok, run: RunDir,
            written: dict | None = None) -> dict:
    """The point's row of the summary: its state (saved for --resume), accuracy and paired accuracy change."""
    state = point.state
    if evaluation is not None:
        state["evaluation"] = evaluation
        for rel, digest in sorted((written or {}).items()):   # a defence's own files: what its writes returned,
            run.record(rel, digest, save=False)                 # with the SHA-256 of the bytes written
        run.save()
        if state["model"]:   # what resuming needs to skip training and these checks
            run.write(f"hardened/{point.label}.json", dumps(state, indent=None))
    diff = paired_difference(base_ok, ok)
    return {"label": point.label, "dir": point.label, **state,
            "accuracy": vars(Metric.rate("test accuracy", int(ok.sum()), len(ok))),
            "accuracy_change": {"points": diff[0], "ci_low": diff[1], "ci_high": diff[2]},
            "pipeline_bug": any(ev.get("pipeline_bug") for ev in state["evaluation"].values())}


def _reuse_hardened(subject, params, out_dir: Path, state_rel: str, state: dict, run: RunDir, ctx):
    """On --resume: the hardened model this run saved (same parameters), loaded through the scan like any
    model file, with the defended recipe rebuilt without training. None to apply again (no proven state);
    a one-line error when the saved model is not, byte for byte, the one this run recorded (a plain model
    swapped in would be reported as hardened)."""
    created = {c["path"]: c["sha256"] for c in run.created}   # proven records only (audit/rundir.py)
    path = out_dir / state_rel
    if state_rel not in created or not path.is_file() or sha256(path) != created[state_rel]:
        return None
    try:
        saved = json.loads(read_regular(path).decode("utf-8"))
    except (OSError, UserError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    model = saved.get("model") or {}
    rel = Path(str(model.get("path", ""))).relative_to(out_dir).as_posix() if str(model.get("path", "")).startswith(
        str(out_dir)) else None
    if saved.get("params") != state["params"] or model.get("format") != "export" or rel is None:
        return None
    saved_model = out_dir / rel
    if not os.path.lexists(saved_model):
        return None   # gone: the point is applied again
    if rel not in created or saved_model.is_symlink() or not saved_model.is_file() \
            or sha256(saved_model) != created[rel]:
        raise UserError(f"--resume: {saved_model}: is not the hardened model this run saved "
                        "(missing, or its SHA-256 differs from the run's record); mlwarden will not report it as "
                        f"hardened nor retrain over it: move it away, or drop --resume, or choose a new --out")
    target = load_target(str(saved_model), subject.data)
    target.access = subject.target.access
    recipe = subject.recipe
    for d, p in params:
        if d.kind in RETRAINS:
            recipe, _ = d.defend_recipe(recipe, p, subject.data)
    hooks = [d.repair_hook(p, ctx) for d, p in params if d.kind == "repair"]
    if hooks and recipe is not None:   # models the re-audit retrains are repaired, as in the first run
        recipe = recipe.with_(repair=chain(hooks))
    target = wrap_target(target, params, ctx, {})            # smoothing and other wrappers, applied again
    recipe = with_inference(recipe, params, ctx)
    target.name = saved.get("target_name", target.name)   # the same subject as the first run's audit
    return Hardened(target, recipe, saved["facts"], training_s=saved.get("training_s", 0.0)), saved


def _is_list(annotation) -> bool:
    """list[...] or list[...] | None: a parameter that holds several values."""
    return get_origin(annotation) is list or any(get_origin(a) is list for a in get_args(annotation))


def _short(p) -> str:
    return ", ".join(f"{k}={v}" for k, v in p.model_dump().items() if v is not None)
