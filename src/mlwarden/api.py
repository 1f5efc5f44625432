"""The Python API: `mlwarden.audit(model, data, ...)` returns a Report that renders in notebooks."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .audit.config import AuditSettings
from .audit.runner import Subject, make_plan, run_plan
from .audit.subject import as_dataset, as_target
from .core.recipe import get_recipe
from .core.registry import get_threats
from .io.models import probe
from .report.report import Report


def audit(model, data, *, threats: list[str] | None = None, profile: str = "quick", out: str | Path | None = None,
          access: str | None = None, eps: float | None = None, seed: int = 0, threads: int = 1,
          time_budget_s: float | None = 600, params: dict[str, dict[str, Any]] | None = None, recipe=None,
          input_range=None, resume: bool = False, progress=None) -> Report:
    """Audit `model` on `data` and return the Report (also written to `out`, default ./mlwarden-out/api).

    model: torch nn.Module (white-box), scikit-learn estimator (scores), callable x -> scores, or a Target.
    data: a Dataset, a built-in name ('digits', 'breast-cancer', 'iris', 'wine'), a .npz/.csv path,
          or (x_train, y_train, x_test, y_test).
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
    subject = Subject(target, ds, recipe, {"path": None})
    out_dir = Path(out or "mlwarden-out/api")
    chosen = get_threats(threats)
    plan = make_plan(subject, chosen, profile, params or {}, eps, out_dir)
    return run_plan(subject, plan, out_dir, settings=settings.model_dump(), resume=resume, progress=progress)
