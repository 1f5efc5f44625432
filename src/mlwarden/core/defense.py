"""The Defense contract, the sibling of Threat: one defence method family per registered class.

A defence declares its kind, typed parameters with profiles, and what it mitigates (threat names or
family names); `apply(subject, params, ctx)` returns a `Hardened` value: the defended model, the recipe
an informed attacker would train its reference models with, and the defence's facts (epsilon, certified
radius, points removed) in a typed record.

Training defences compose: each one rewrites the recipe (`defend_recipe`), and `apply_defenses` trains
once with all of them (`--defense dp-sgd,adversarial-training`). Inference defences wrap the target
(`defend_target`). Repair defences rewrite a trained network (`repair_hook`: backdoor removal by
fine-pruning or unlearning) with a little clean data and need no recipe: the subject's own model is
repaired, and the hardened recipe repairs every model it trains, so a re-audit that retrains (the backdoor
threat) measures the repaired models. Aggregation defences replace a federation's rule for combining client updates: like training defences they
rewrite the recipe (a FederatedRecipe, federated/recipe.py) and the federation trains again. Detection
defences override `apply` itself.
"""
from __future__ import annotations

import copy

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

from torch import nn

from .data import Dataset
from .errors import UserError
from .files import Dest, Folder, write_file
from .recipe import Recipe
from .target import Target, TorchTarget
from .threat import Params

KINDS = ("training", "repair", "inference", "detection", "aggregation")
RETRAINS = ("training", "aggregation")   # kinds that rewrite the recipe and train the model again


@dataclass
class DefenseContext:
    data: Dataset
    out_dir: Path
    seed: int = 0
    profile: str = "quick"
    backend: Any = None
    label: str = "after"   # the harden point ("after", or "after-KEY=VALUE" in a sweep)
    # guard(path) raises when a file may not be replaced (harden's: one the run did not write, or one changed
    # since; see audit/rundir.py); None writes anywhere (a context made by hand)
    guard: Callable[[Path], None] | None = None
    # out_dir as the run claimed it (core/files.py): files are written relative to it; None writes by path.
    # `written`: what the defence wrote (path relative to out_dir -> SHA-256 of the bytes), what harden records.
    place: Folder | None = None
    written: dict = field(default_factory=dict)

    def file(self, rel: str) -> Dest:
        """A file a defence writes (relative to out_dir; list it in its evaluation's "files" or "plots"),
        checked by the guard; write it with `core.files.write_file(dest, data)` (plots do), which writes it
        through the run's one write primitive and records it in `written`."""
        path = self.out_dir / rel
        if self.guard is not None:
            self.guard(path)
        return Dest(path, self._put)

    def _put(self, path: Path, data: bytes) -> str:
        rel = Path(path).relative_to(self.out_dir).as_posix()
        digest = self.place.write(rel, data) if self.place is not None else write_file(path, data)
        self.written[rel] = digest
        return digest

    def point_name(self, stem: str, suffix: str, single: str = "") -> str:
        """A file name of this point's own, so a sweep's points (audited side by side) never share one:
        stem + single + suffix for a lone point, stem-KEY=VALUE + suffix for a sweep's."""
        swept = self.label.removeprefix("after")
        return f"{stem}{swept or single}{suffix}"


@dataclass
class Hardened:
    """What a defence hands back: the defended model and the facts that describe it."""
    target: Target
    recipe: Recipe | None                       # how the defended model is trained (for an informed attacker)
    facts: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    training_s: float = 0.0
    model: Any = None   # the trained network, or a model retrained as itself (io/estimator_recipe.py Fitted), to save


class Defense:
    """One defence. Subclasses set the class attributes and implement the hook of their kind."""

    name: ClassVar[str]
    title: ClassVar[str]
    kind: ClassVar[str] = "training"
    mitigates: ClassVar[tuple[str, ...]] = ()
    Params: ClassVar[type[Params]] = Params
    profiles: ClassVar[dict[str, dict[str, Any]]] = {}
    sweepable: ClassVar[tuple[str, ...]] = ()   # parameters whose values trace a trade-off curve
    modalities: ClassVar[tuple[str, ...]] = ("image", "tabular", "text")
    # the optional packages it needs, as (module, extra, what needs it): checked when the defence is chosen,
    # before any model trains, so a missing one is the first thing the user reads
    extras: ClassVar[tuple[tuple[str, str, str], ...]] = ()
    # what the defence does that only a network allows, which refuses a model retrained as itself (a
    # scikit-learn estimator or a booster, io/estimator_recipe.py): None reads the kind (inference defences
    # wrap any model; the others train or rewrite a network); "" works on such models
    network_only: ClassVar[str | None] = None

    def needs_network(self) -> str:
        """Why this defence cannot harden a model retrained as itself ("" when it can)."""
        if self.network_only is not None:
            return self.network_only
        return "" if self.kind == "inference" else f"{'rewrites' if self.kind == 'repair' else 'trains'} networks"

    def require_extras(self) -> None:
        from .extras import require
        for module, extra, what in self.extras:
            require(module, extra, what)

    def params_for(self, profile: str, overrides: dict[str, Any] | None = None) -> Params:
        values = dict(self.profiles.get(profile, {}))
        values.update(overrides or {})
        return self.Params(**values)

    # -- the hooks of each kind ---------------------------------------------------------------------
    def check(self, params: Params, data: Dataset) -> None:
        """Refuse, with a UserError, data or settings this defence cannot work with, before anything runs."""

    def check_target(self, target: Target, params: Params) -> None:
        """Refuse, with a UserError, a model this defence cannot work on (repair defences: not a network)."""

    def defend_recipe(self, recipe: Recipe, params: Params, data: Dataset) -> tuple[Recipe, dict[str, Any]]:
        """Training defences: the recipe with this defence applied, and facts known before training."""
        raise NotImplementedError

    def after_training(self, recipe: Recipe, params: Params) -> dict[str, Any]:
        """Training defences: facts known once the defended model is trained (e.g. epsilon spent)."""
        return {}

    def defend_target(self, target: Target, params: Params, ctx: DefenseContext) -> tuple[Target, dict[str, Any]]:
        """Inference defences: the target behind this defence."""
        raise NotImplementedError

    def repair_hook(self, params: Params, ctx: DefenseContext):
        """Repair defences: a callable model -> repaired model (with `facts` after each call), holding the
        clean data it uses; it becomes the hardened recipe's `repair`."""
        raise NotImplementedError

    def apply(self, subject, params: Params, ctx: DefenseContext) -> Hardened:
        return apply_defenses(subject, [(self, params)], ctx)

    def evaluate(self, subject, hardened: Hardened, params: Params, ctx: DefenseContext) -> dict[str, Any]:
        """Measurements only this defence makes (DP: the one-run privacy audit). Called by harden."""
        return {}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "mitigates": list(self.mitigates), "title": self.title,
                "params": list(self.Params.model_fields), "sweepable": list(self.sweepable),
                "doc": (self.__doc__ or "").strip().splitlines()[0]}


def apply_defenses(subject, chosen: list[tuple[Defense, Params]], ctx: DefenseContext) -> Hardened:
    """Training defences rewrite the recipe in turn and the model trains once; repair defences rewrite the
    trained network (or the subject's own, when nothing retrains); inference defences then wrap the
    resulting target in turn. `subject` needs `target`, `data` and (for training) `recipe`."""
    training = [(d, p) for d, p in chosen if d.kind in RETRAINS]
    if sum(d.kind == "aggregation" for d, _ in chosen) > 1:
        raise UserError("a federation has one aggregation rule: choose one of "
                        + ", ".join(d.name for d, _ in chosen if d.kind == "aggregation"))
    facts: dict[str, Any] = {}
    target, recipe, seconds, model = subject.target, subject.recipe, 0.0, None
    hooks = [(d, d.repair_hook(p, ctx)) for d, p in chosen if d.kind == "repair"]
    repair = chain([h for _, h in hooks]) if hooks else None
    if repair is not None and recipe is not None:   # every model the recipe trains is repaired
        recipe = recipe.with_(repair=repair)
    if training:
        if recipe is None:
            raise UserError(f"{', '.join(d.name for d, _ in training)} retrains the model: give its training "
                            "recipe (--recipe NAME or module:function)")
        for d, p in training:
            recipe, f = d.defend_recipe(recipe, p, ctx.data)
            facts[d.name] = f
        data = ctx.data
        t0 = time.monotonic()
        model = recipe.fit(data.x_train, data.y_train, data.n_classes, seed=ctx.seed)
        seconds = time.monotonic() - t0
        for d, p in training:
            facts[d.name].update(d.after_training(recipe, p))
        names = "+".join(d.name for d, _ in training)
        target = recipe.target_for(model, data, subject.target.access, f"{subject.target.name} + {names}")
    if hooks:
        names = "+".join(d.name for d, _ in hooks)
        if not training:     # no retraining: repair the subject's own network (fit repaired a trained one)
            t0 = time.monotonic()
            model = repair(network_of(target, names))
            seconds = time.monotonic() - t0
            target = TorchTarget(model, ctx.data.n_classes, ctx.data.input_shape, access=subject.target.access,
                                 name=f"{subject.target.name} + {names}")
        for d, h in hooks:
            facts.setdefault(d.name, {}).update(getattr(h, "facts", {}))
    target = wrap_target(target, chosen, ctx, facts)
    recipe = with_inference(recipe, chosen, ctx)
    others = [d.name for d, _ in chosen if d.kind not in (*RETRAINS, "repair", "inference")]
    if others:
        raise UserError(f"{', '.join(others)} cannot be combined with other defences in one run")
    # a network, or a model retrained as itself (a scikit-learn model or a booster; a text filter)
    keep = isinstance(model, nn.Module) or hasattr(model, "to_bytes") or hasattr(model, "to_files")
    return Hardened(target, recipe, facts, training_s=seconds, model=model if keep else None)


def chain(hooks: list):
    """One repair hook that applies these in turn."""
    if len(hooks) == 1:
        return hooks[0]
    return Chain(tuple(hooks))


@dataclass(frozen=True)
class Chain:
    hooks: tuple

    def __call__(self, model):
        for h in self.hooks:
            model = h(model)
        return model


def network_of(target: Target, names: str) -> nn.Module:
    try:
        module = target.module
    except (AttributeError, NotImplementedError):
        module = None
    if not isinstance(module, nn.Module):
        raise UserError(f"{names} rewrites the network's weights; {target.name} is not a PyTorch network")
    from .device import OnDevice
    if isinstance(module, OnDevice):   # the audited network on a GPU: repairs work on a CPU copy of it
        module = copy.deepcopy(module.inner).to("cpu")
    return module


@dataclass(frozen=True)
class Inference:
    """The recipe's `inference`: these defences wrap any target, as they wrapped the hardened one."""
    chosen: tuple
    ctx: DefenseContext

    def __call__(self, target: Target) -> Target:
        return wrap_target(target, list(self.chosen), self.ctx, {})

    def __repr__(self) -> str:   # part of the recipe's description (cache keys)
        return "inference(" + ", ".join(f"{d.name}({p.model_dump()})" for d, p in self.chosen) + ")"


def with_inference(recipe: Recipe | None, chosen: list[tuple[Defense, Params]], ctx: DefenseContext):
    """The recipe with the chosen inference defences in front of every model it trains (None stays None)."""
    wrappers = tuple((d, p) for d, p in chosen if wraps_target(d))
    if recipe is None or not wrappers:
        return recipe
    return recipe.with_(inference=Inference(wrappers, ctx))


def wraps_target(d: Defense) -> bool:
    """Inference defences, and training defences that also change how the trained model answers (randomized
    smoothing trains with noise and predicts by voting over noisy copies)."""
    return d.kind == "inference" or type(d).defend_target is not Defense.defend_target


def wrap_target(target: Target, chosen: list[tuple[Defense, Params]], ctx: DefenseContext,
                facts: dict[str, Any]) -> Target:
    for d, p in chosen:
        if wraps_target(d):
            target, f = d.defend_target(target, p, ctx)
            facts.setdefault(d.name, {}).update(f)
    return target


def check_applicable(subject, chosen: list[tuple[Defense, Params]], data: Dataset) -> None:
    """Fail with the defence's own error before anything trains or audits: a missing recipe, a value the
    defence rejects (DP's delta), a network it cannot train."""
    itself = getattr(subject.recipe, "as_itself", False)
    for d, p in chosen:
        if data.modality not in d.modalities:
            raise UserError(f"{d.name} applies to {'/'.join(d.modalities)} data; this data is {data.modality}")
        if itself and d.needs_network():
            raise UserError(f"{d.name} {d.needs_network()}; {subject.recipe.model_kind} is retrained as itself "
                            f"(defences that can harden it: {', '.join(usable_without_network(data))})")
        d.check(p, data)
        d.check_target(subject.target, p)
    training = [(d, p) for d, p in chosen if d.kind in RETRAINS]
    if training and subject.recipe is None:
        raise UserError(f"{', '.join(d.name for d, _ in training)} retrains the model: give its training recipe "
                        "(--recipe NAME or module:function)")
    recipe = subject.recipe
    for d, p in training:
        recipe, _ = d.defend_recipe(recipe, p, data)


def usable_without_network(data: Dataset) -> list[str]:
    """The registered defences that harden a model retrained as itself, on this data."""
    from .registry import all_defenses
    return [n for n, d in all_defenses().items() if not d.needs_network() and data.modality in d.modalities]
