"""The Python API: `mlwarden.audit(model, data, ...)` returns a Report that renders in notebooks."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .audit.config import AuditSettings
from .audit.runner import Subject, run_audit
from .audit.subject import as_dataset, as_target, default_recipe
from .core.recipe import get_recipe
from .io.models import probe
from .report.report import Report


def audit(model, data, *, threats: list[str] | None = None, profile: str = "quick", out: str | Path | None = None,
          access: str | None = None, eps: float | None = None, seed: int = 0, threads: int = 1,
          time_budget_s: float | None = 600, params: dict[str, dict[str, Any]] | None = None, recipe=None,
          input_range=None, resume: bool = False, progress=None) -> Report:
    """Audit `model` on `data` and return the Report (also written to `out`, default ./mlwarden-out/api).

    model: torch nn.Module (white-box), scikit-learn estimator (scores), callable x -> scores, or a Target;
          with labelled messages, a scikit-learn text pipeline (retrained from a clone of itself).
    data: a Dataset, a built-in name ('digits', 'breast-cancer', 'iris', 'wine', 'sms-spam'), a .npz, .csv or
          .tsv path, or (x_train, y_train, x_test, y_test).
    recipe: how the model was trained (a Recipe or a built-in name such as 'mlp'); the data-extraction
          threats train reference models and canary models through it.
    """
    settings = AuditSettings(threats=threats, profile=profile, seed=seed, threads=threads,
                             time_budget_s=time_budget_s, eps=eps)
    ds = as_dataset(data, input_range)
    target = as_target(model, ds, access)
    probe(target, ds)
    if isinstance(recipe, str):
        recipe = get_recipe(recipe)
    subject = Subject(target, ds, default_recipe(target, recipe), {"path": None})
    return run_audit(subject, Path(out or "mlwarden-out/api"), settings=settings.model_dump(), overrides=params,
                     resume=resume, progress=(lambda total: progress) if progress else None)


def harden(model, data, defense: str, *, params: dict[str, Any] | None = None, recipe=None,
           threats: list[str] | None = None, profile: str = "quick", out: str | Path | None = None,
           seed: int = 0, threads: int = 1, time_budget_s: float | None = 600, threat_params=None,
           access: str | None = None, input_range=None, resume: bool = False):
    """Apply `defense` (a registered name, or several comma-separated), re-audit, and return the
    HardenResult (`.summary`, `.before`, `.after`), written to `out` (default ./mlwarden-out/api-harden).

    params: the defence's parameters, e.g. {"epsilon": 2}; a list value sweeps it ({"epsilon": [1, 2, 4, 8]}).
    recipe: how the model was trained (training defences retrain through it)."""
    from .harden.run import harden as run_harden
    from .harden.run import parse_defenses
    raw = [f"{k}={','.join(map(str, v)) if isinstance(v, (list, tuple)) else v}" for k, v in (params or {}).items()]
    chosen, sweep = parse_defenses(defense, raw)
    ds = as_dataset(data, input_range)
    target = as_target(model, ds, access)
    probe(target, ds)
    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
    subject = Subject(target, ds, default_recipe(target, recipe), {"path": None})
    settings = AuditSettings(threats=threats, profile=profile, seed=seed, threads=threads, time_budget_s=time_budget_s)
    return run_harden(subject, chosen, Path(out or "mlwarden-out/api-harden"), settings=settings.model_dump(),
                      sweep=sweep, threats=threats, overrides=threat_params, resume=resume)
