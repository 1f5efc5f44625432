"""Harden with DP-SGD: audit the subject, retrain it through its recipe with DP-SGD, re-run the same
data-extraction audit (reference models are trained with the DP recipe too, as an informed attacker
would), run the one-run privacy audit on both training pipelines, and write the before/after report."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..audit.rundir import RunDir, claim, read_state
from ..audit.runner import Subject, make_plan, run_plan
from ..core.errors import UserError
from ..core.registry import get_threats
from ..core.target import TorchTarget
from ..defenses.dp_sgd import dp_recipe
from ..privacy.one_run_audit import one_run_audit
from ..report.report import Report, write_atomic
from . import render


@dataclass
class HardenResult:
    summary: dict
    before: Report
    after: Report
    out_dir: Path

    @property
    def pipeline_bug(self) -> bool:
        return bool(self.summary["privacy"].get("pipeline_bug"))


def _accuracy(target, data) -> float:
    with torch.no_grad():
        return float((target.labels(data.x_test) == data.y_test).float().mean())


def harden_dp(subject: Subject, out_dir: Path, *, epsilon: float, delta: float | None, settings: dict,
              threats: list[str] | None = None, overrides: dict | None = None, max_grad_norm: float = 1.0,
              accountant: str = "prv", one_run_canaries: int = 500, dp_changes: dict | None = None,
              progress=None, stage=None) -> HardenResult:
    """progress(n_threats) returns the per-threat callback of each audit; stage(text) announces a step."""
    if subject.recipe is None:
        raise UserError("harden retrains the model: give its training recipe (--recipe NAME or module:function)")
    data = subject.data
    stage = stage or (lambda text: None)
    rec, notes = dp_recipe(subject.recipe.with_(**(dp_changes or {})), data.input_shape, data.n_classes,
                           len(data.x_train), epsilon, delta, max_grad_norm, accountant)
    chosen = get_threats(threats or ["data-extraction"])
    out_dir = Path(out_dir)
    claim(out_dir, resume=False, fingerprint="", what="--out")
    RunDir(out_dir, {"fingerprint": "harden", "defense": "dp-sgd"}).save()

    def audit(subj: Subject, name: str) -> Report:
        plan = make_plan(subj, chosen, settings["profile"], overrides or {}, None, out_dir / name)
        return run_plan(subj, plan, out_dir / name, settings=settings,
                        progress=progress(len(plan)) if progress else None)

    old_threads = torch.get_num_threads()
    torch.set_num_threads(settings.get("threads", 1))
    try:
        return _harden(subject, out_dir, rec, notes, epsilon, settings, audit, stage, one_run_canaries)
    finally:
        torch.set_num_threads(old_threads)


def _harden(subject, out_dir, rec, notes, epsilon, settings, audit, stage, one_run_canaries) -> HardenResult:
    data = subject.data
    delta = notes["delta"]
    stage("auditing the model as it is")
    before = audit(subject, "before")
    stage(f"retraining with DP-SGD at epsilon {epsilon:g}")
    torch.manual_seed(settings["seed"])
    t0 = time.monotonic()
    model = rec.fit(data.x_train, data.y_train, data.n_classes, seed=settings["seed"])
    train_s = time.monotonic() - t0
    privacy = dict(rec.wrap.result)
    privacy.pop("started", None)
    privacy["epsilon_spent"] = rec.wrap.spent()
    privacy["training_s"] = train_s
    privacy["fixed_layers"] = notes["fixed_layers"]
    hardened = TorchTarget(model, data.n_classes, data.input_shape, access=subject.target.access,
                           name=f"{subject.target.name} + DP-SGD (eps={epsilon:g})")
    after_subject = Subject(hardened, data, rec, {**subject.info, "hardened": f"dp-sgd eps={epsilon:g}"})
    stage("auditing the hardened model")
    after = audit(after_subject, "after")

    stage("one-run privacy audit (Steinke et al. 2023) of both training pipelines")
    integer = data.modality == "text"
    ora = {}
    for name, r in (("before", subject.recipe), ("after", rec)):
        ora[name] = one_run_audit(r, data.x_train, data.y_train, data.x_test, data.y_test, data.n_classes,
                                  delta=delta, low=data.space.low, high=data.space.high, integer_inputs=integer,
                                  m=one_run_canaries, seed=settings["seed"]).as_dict()
    privacy["one_run_audit"] = ora
    privacy["pipeline_bug"] = ora["after"]["epsilon_lower_bound"] > privacy["epsilon_spent"] + 1e-9
    privacy["unit"] = ("one window of text (context + next character)" if integer else "one training example")
    summary = {
        "schema": "mlwarden.harden/1", "defense": "dp-sgd",
        "accuracy": {"before": _accuracy(subject.target, data), "after": _accuracy(hardened, data),
                     "n": int(len(data.x_test))},
        "privacy": privacy,
        "findings": render.compare(before, after),
        "headlines": {"before": {f.threat: f.headline for f in before.ran},
                      "after": {f.threat: f.headline for f in after.ran}},
        "notes": [n for f in after.ran for n in f.details.get("notes", []) if "DP-SGD" in n],
        "before_dir": "before", "after_dir": "after",
        "subject": subject.describe(),
    }
    files = {"harden.json": json.dumps(summary, indent=2, default=float), "harden.md": render.markdown(summary),
             "harden.html": render.html(summary)}
    for name, text in files.items():
        write_atomic(out_dir / name, text)
    RunDir(out_dir, read_state(out_dir) or {}).add(*files)
    return HardenResult(summary, before, after, out_dir)
