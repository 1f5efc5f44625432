"""The Threat contract and the context a threat runs in."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch
from pydantic import BaseModel, ConfigDict

from .backend import LocalBackend
from .data import Dataset
from .errors import TimeBudgetExceeded
from .files import Dest, Folder, write_file
from .finding import Finding, Remedy, Severity, Status
from .recipe import Recipe
from .target import Access, Target

PROFILES = ("quick", "standard", "thorough")


class Params(BaseModel):
    """Typed threat parameters; unknown keys are errors."""
    model_config = ConfigDict(extra="forbid")


@dataclass
class Context:
    target: Target
    data: Dataset
    evidence_dir: Path
    recipe: Recipe | None = None
    seed: int = 0
    profile: str = "quick"
    time_budget_s: float | None = None
    backend: Any = None  # LocalBackend unless the runner is given another (core/backend.py)
    cache: dict = field(default_factory=dict)  # shared between threats of one audit (e.g. masking checks)
    started: float = field(default_factory=time.monotonic)
    # guard(path) raises when an evidence file may not be replaced (the runner's: a file the run did not
    # write, or one changed since; see audit/rundir.py); None writes anywhere (a Context made by hand)
    guard: Callable[[Path], None] | None = None
    # the run directory (evidence_dir's grandparent) as the run claimed it: evidence is written relative to it
    # (core/files.py); None writes by path (a Context made by hand). `written`: what the threat wrote
    # (relative path -> SHA-256 of the bytes), the only files the run records for it.
    place: Folder | None = None
    written: dict = field(default_factory=dict)
    _handed: set = field(default_factory=set, repr=False)

    def __post_init__(self):
        if self.backend is None:
            self.backend = LocalBackend()

    def evidence_path(self, name: str) -> Dest:
        """The evidence file `name`, checked by the guard; write it with `core.files.write_file(dest, bytes)`
        (plots do), which writes it through the run's one write primitive and records it."""
        path = self.evidence_dir / name
        if self.guard is not None and path not in self._handed:   # a name handed out before is this threat's
            self.guard(path)
            self._handed.add(path)
        return Dest(path, self._put)

    def _put(self, path: Path, data: bytes) -> str:
        rel = self.rel(path)
        digest = self.place.write(rel, data) if self.place is not None else write_file(path, data)
        self.written[rel] = digest
        return digest

    def rel(self, path: Path | Dest) -> str:
        """Evidence paths are stored relative to the run directory (two levels above evidence_dir)."""
        return Path(path).relative_to(self.evidence_dir.parent.parent).as_posix()

    def check_time(self) -> None:
        """Called inside attack loops; raises when the threat has used its time budget."""
        if self.time_budget_s is not None and time.monotonic() - self.started > self.time_budget_s:
            raise TimeBudgetExceeded(f"time budget of {self.time_budget_s:g}s exceeded")


class Threat:
    """One attack. Subclasses set the class attributes and implement `run`."""

    name: ClassVar[str]
    family: ClassVar[str]
    title: ClassVar[str]
    needs: ClassVar[Access] = Access.WHITE_BOX
    modalities: ClassVar[tuple[str, ...]] = ("image", "tabular")
    atlas: ClassVar[list[str]] = []
    Params: ClassVar[type[Params]] = Params
    profiles: ClassVar[dict[str, dict[str, Any]]] = {}
    remedy: ClassVar[Remedy | None] = None
    in_default_audit: ClassVar[bool] = True
    needs_recipe: ClassVar[bool] = False     # retrains the model: needs the training recipe (--recipe)
    needs_torch: ClassVar[bool] = False      # reads the model's layers: needs a PyTorch module
    # with needs_recipe: also runs on a recipe that retrains an estimator or a booster as itself
    # (io/estimator_recipe.py), whose fit returns a function of inputs to probabilities, not a network
    retrains_any_model: ClassVar[bool] = False

    def skip_reason(self, ctx: Context) -> str | None:
        if not ctx.target.access.allows(self.needs):
            why = getattr(ctx.target, "access_note", None)   # e.g. an ONNX graph that did not convert to torch
            return f"needs {self.needs.value} access; the target gives {ctx.target.access.value}" + (
                f" ({why})" if why else "")
        if ctx.data.modality not in self.modalities:
            return f"applies to {'/'.join(self.modalities)} data; this data is {ctx.data.modality}"
        if self.needs_recipe and getattr(ctx.recipe, "as_itself", False) and not self.retrains_any_model:
            return f"retrains networks; {ctx.recipe.model_kind} is retrained as itself"
        if self.needs_recipe and ctx.recipe is None or (self.needs_recipe and not self.retrains_any_model
                                                        and not hasattr(ctx.recipe, "factory")):
            return "needs training access: the recipe (--recipe) the model is trained with"
        if self.needs_torch and not isinstance(ctx.target.module, torch.nn.Module):   # white-box checked above
            return "needs the model's layers and gradients (a PyTorch model)"
        return None

    def params_for(self, profile: str, overrides: dict[str, Any] | None = None) -> Params:
        values = dict(self.profiles.get(profile, {}))
        values.update(overrides or {})
        return self.Params(**values)

    def run(self, ctx: Context, params: Params) -> Finding:
        raise NotImplementedError

    def finding(self, ctx: Context, params: Params, *, status: Status, severity: Severity, headline: str,
                **kw) -> Finding:
        return Finding(threat=self.name, family=self.family, title=self.title, status=status,
                       severity=severity, headline=headline, atlas=list(self.atlas), profile=ctx.profile,
                       params=params.model_dump(),
                       remedy=self.remedy.for_params(params.model_dump()) if self.remedy else None, **kw)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family, "title": self.title, "needs": self.needs.value,
                "modalities": list(self.modalities), "atlas": list(self.atlas),
                "default": self.in_default_audit, "doc": (self.__doc__ or "").strip().splitlines()[0]}
