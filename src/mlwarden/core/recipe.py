"""How to train a fresh model like the target.

Shadow models, poisoning and backdoor retraining, DP-SGD, adversarial training and federated clients
all train through a Recipe, so it exposes its parts (factory, optimizer, loader, loop) and two hooks:
`wrap` may replace (model, optimizer, loader), and optionally the loss, before training (Opacus's
make_private fits here), `batch_transform` may rewrite each batch (adversarial training fits here),
`data_filter` may remove points before training (sanitizers fit here), `loss` may replace the loss and
`on_epoch` may watch each epoch and stop training early (fast adversarial training's overfitting check),
and `repair` may rewrite the trained model (backdoor removal: fine-pruning, Neural Cleanse unlearning).
`inference` is not a training hook: it puts the hardened model's inference defences (a denoiser, randomized
smoothing) in front of a model the recipe trained, so a threat that retrains (the backdoor threat) measures
its models as the defender would serve them.

A `data_filter` that also has `keep_mask(x, y) -> bool tensor` is a sanitizer: a caller that knows which
points were planted (a poisoning threat) asks it which it keeps, and reports what it removed.
"""
from __future__ import annotations

import copy
import importlib
from dataclasses import dataclass, field, replace
from typing import Callable

import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

from . import zoo
from .device import OnDevice
from .errors import UserError

Factory = Callable[[tuple[int, ...], int], nn.Module]


@dataclass
class Recipe:
    name: str
    factory: Factory
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"
    extra: dict = field(default_factory=dict)
    # Hooks, each the default for the fit() argument of the same name, so a defence composes by returning
    # the recipe with its hook set: DP-SGD sets `wrap`, adversarial training `batch_transform`, a data
    # sanitizer `data_filter`.
    wrap: Callable | None = None             # (model, opt, loader) -> (model, opt, loader[, loss])
    batch_transform: Callable | None = None  # (model, xb, yb) -> (xb, yb), every batch
    data_filter: Callable | None = None      # (x, y) -> (x, y), once, before training (sanitizers remove points)
    loss: Callable | None = None             # (logits, targets) -> loss; default cross-entropy (hard or soft labels)
    on_epoch: Callable | None = None         # (epoch, model) -> True to stop training now
    repair: Callable | None = None           # model -> model, once, after training (backdoor removal)
    inference: Callable | None = None        # Target -> Target: the inference defences in front of each model
    device: str | None = None                # trains there (core/device.py); the trained model comes back to the CPU

    def describe(self) -> dict:
        """What identifies the training procedure (cache keys of reference models use it)."""
        hooks = {k: _stable(getattr(self, k)) for k in ("wrap", "batch_transform", "data_filter", "loss", "on_epoch",
                                                        "repair", "inference") if getattr(self, k) is not None}
        return {"name": self.name, "factory": f"{self.factory.__module__}:{getattr(self.factory, '__qualname__', repr(self.factory))}",
                "epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr,
                "weight_decay": self.weight_decay, "optimizer": self.optimizer, "extra": self.extra,
                "wrap": hooks.get("wrap"), **{k: v for k, v in hooks.items() if k != "wrap"},
                **({"device": self.device} if self.device and self.device != "cpu" else {})}

    def make_model(self, input_shape, n_classes: int) -> nn.Module:
        return self.factory(tuple(input_shape), n_classes)

    def target_for(self, model: nn.Module, data, access, name: str):
        """The trained model as a Target (filter recipes, text/filters.py, return their own kind)."""
        from .target import TorchTarget
        return TorchTarget(model, data.n_classes, data.input_shape, access=access, name=name)

    def make_optimizer(self, params) -> torch.optim.Optimizer:
        # foreach: one call updates every parameter tensor (on the CPU torch defaults to a Python loop over them,
        # a quarter of an MLP's training step); the same arithmetic, so the same weights
        if self.optimizer == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=0.9, weight_decay=self.weight_decay, foreach=True)
        return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay, foreach=True)

    def make_loader(self, x: torch.Tensor, y: torch.Tensor, seed: int) -> DataLoader:
        g = torch.Generator().manual_seed(seed)
        return DataLoader(TensorDataset(x, y), batch_size=self.batch_size, shuffle=True, generator=g)

    def _batches(self, x: torch.Tensor, y: torch.Tensor, seed: int) -> DataLoader:
        """make_loader's batches, in the same order (the same sampler draws from the same generator), each taken
        by one indexing of the tensors instead of `batch_size` item reads and a stack (a fifth of an MLP's
        training time). A loader a `wrap` (Opacus) re-samples stays make_loader's."""
        g = torch.Generator().manual_seed(seed)
        ds = TensorDataset(x, y)
        return DataLoader(ds, batch_size=None, generator=g,
                          sampler=BatchSampler(RandomSampler(ds, generator=g), self.batch_size, drop_last=False))

    def with_(self, **changes) -> "Recipe":
        return replace(self, **changes)

    def fit(self, x: torch.Tensor, y: torch.Tensor, n_classes: int, *, seed: int = 0,
            wrap: Callable | None = None, batch_transform: Callable | None = None,
            on_epoch: Callable | None = None, init: nn.Module | None = None) -> nn.Module:
        """The one training loop. `init`: fine-tune a copy of this model instead of a fresh one (only its
        parameters that require gradients train: core.layers.new_head freezes the features). `y` holds labels, or probabilities (soft labels, e.g. a victim's answers
        that an extraction copy learns from). `on_epoch(epoch, model)` is called after every epoch; a true
        result ends training there."""
        torch.manual_seed(seed)
        if self.data_filter is not None:
            x, y = self.data_filter(x, y)
        model = self.make_model(x.shape[1:], n_classes) if init is None else _copy(init)
        dev = torch.device(self.device) if self.device and self.device != "cpu" else None
        if dev is not None:
            model = model.to(dev)
        opt = self.make_optimizer([p for p in model.parameters() if p.requires_grad])
        wrap = wrap if wrap is not None else self.wrap
        plain = wrap is None and type(self).make_loader is Recipe.make_loader
        loader = self._batches(x, y, seed) if plain else self.make_loader(x, y, seed)
        batch_transform = batch_transform if batch_transform is not None else self.batch_transform
        on_epoch = on_epoch if on_epoch is not None else self.on_epoch
        loss_fn = self.loss or nn.CrossEntropyLoss()
        if wrap is not None:
            wrapped = wrap(model, opt, loader)
            model, opt, loader = wrapped[:3]
            if len(wrapped) == 4:  # the wrap also replaces the loss (Opacus's fast gradient clipping does)
                loss_fn = wrapped[3]
        for epoch in range(self.epochs):
            model.train()
            for xb, yb in loader:
                if dev is not None:
                    xb, yb = xb.to(dev, non_blocking=True), yb.to(dev, non_blocking=True)
                if batch_transform is not None:
                    xb, yb = batch_transform(model, xb, yb)
                opt.zero_grad(set_to_none=True)
                loss_fn(model(xb), yb).backward()
                opt.step()
            if on_epoch is not None and on_epoch(epoch, model if dev is None else OnDevice(model, dev)):
                break
        if hasattr(model, "_module"):  # Opacus's GradSampleModule: hand back the plain network, hooks removed
            model.remove_hooks()
            if hasattr(model, "cleanup"):
                model.cleanup()
            model = model._module
        if dev is not None:
            model = model.to("cpu")
        if self.repair is not None:
            model = self.repair(model.eval())
        return model.eval()


BUILTIN_RECIPES = {
    "mlp": Recipe("mlp", zoo.mlp, epochs=40),
    "cnn": Recipe("cnn", zoo.cnn, epochs=25),
    "logreg": Recipe("logreg", zoo.logreg, epochs=60, lr=1e-2),
    "tabular-mlp": Recipe("tabular-mlp", zoo.tabular_mlp, epochs=60),
    "charlm": Recipe("charlm", zoo.charlm, epochs=4, batch_size=256, lr=2e-3),
    "sigmoid-mlp": Recipe("sigmoid-mlp", zoo.sigmoid_mlp, epochs=40),
    "square-mlp": Recipe("square-mlp", zoo.square_mlp, epochs=40),
    "sigmoid-lenet": Recipe("sigmoid-lenet", zoo.sigmoid_lenet, epochs=25),
}


def load_entry_point(spec: str, what: str = "factory"):
    """Resolve 'package.module:attribute' (or 'path/to/file.py:attribute') into the attribute. A module that
    is not installed is looked for in the working directory too, as `python -m` would find it: the console
    script's own path does not hold it. Such a module travels to backend workers by value."""
    if ":" not in spec:
        raise UserError(f"{what} '{spec}' must look like 'package.module:function'")
    mod_name, attr = spec.rsplit(":", 1)
    try:
        mod = _import_user_module(mod_name)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - any import failure is the user's entry point
        raise UserError(f"{what} '{spec}': cannot import module '{mod_name}' ({type(e).__name__}: {e})") from None
    try:
        return getattr(mod, attr)
    except AttributeError:
        raise UserError(f"{what} '{spec}': module '{mod_name}' has no attribute '{attr}'") from None


def _import_user_module(name: str):
    import os
    import sys
    if name.endswith(".py"):   # a file path
        from importlib.util import module_from_spec, spec_from_file_location
        path = os.path.abspath(name)
        if not os.path.isfile(path):
            raise UserError(f"no such file: {name}")
        mod_name = "mlwarden_user_" + os.path.splitext(os.path.basename(path))[0].replace("-", "_")
        spec = spec_from_file_location(mod_name, path)
        mod = module_from_spec(spec)
        sys.modules[mod_name] = mod
        spec.loader.exec_module(mod)
        _by_value(mod)
        return mod
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name != name.split(".")[0] or os.getcwd() in sys.path:
            raise
    sys.path.append(os.getcwd())   # last: an installed package is never shadowed by a file here
    try:
        mod = importlib.import_module(name)
    finally:
        sys.path.remove(os.getcwd())
    _by_value(mod)
    return mod


def _by_value(mod) -> None:
    """A worker process does not have the working directory on its path: send the module's code with the work."""
    try:
        import cloudpickle
        cloudpickle.register_pickle_by_value(mod)
    except (ImportError, ValueError):
        pass


def get_recipe(name_or_spec: str) -> Recipe:
    if name_or_spec in BUILTIN_RECIPES:
        return BUILTIN_RECIPES[name_or_spec]
    obj = load_entry_point(name_or_spec, "recipe")
    try:
        recipe = obj() if callable(obj) and not isinstance(obj, Recipe) else obj
    except TypeError as e:
        raise UserError(f"recipe '{name_or_spec}' must be a Recipe or a function of no arguments returning one ({e}); "
                        "a function that builds the network goes in --factory") from None
    if not isinstance(recipe, Recipe):
        raise UserError(f"recipe '{name_or_spec}' did not return an mlwarden Recipe")
    return recipe


def _copy(init: nn.Module) -> nn.Module:
    """A deep copy whose parameters are leaves an optimizer takes, each requiring gradients as the original's
    does: a TorchScript module copied with gradients on clones its parameters into non-leaf tensors ("can't
    optimize a non-leaf Tensor"), so the copy is made with gradients off and the flags are set after."""
    with torch.no_grad():
        model = copy.deepcopy(init)
    for q, original in zip(model.parameters(), init.parameters()):
        q.requires_grad_(original.requires_grad)
    return model


def _stable(hook) -> str:
    """A hook as text that names what it does: its repr, except that a module-level function (no closure, not a
    lambda) is named by its module, qualified name and a hash of its code, the same in every process (its
    default repr holds a memory address, which changed a reference-model cache key at every run). Anything else keeps its repr, an
    address included: two closures or objects of one name may hold other settings, and sharing a key would
    reuse models trained otherwise."""
    import hashlib
    import inspect
    qualname = getattr(hook, "__qualname__", "")
    if inspect.isfunction(hook) and hook.__closure__ is None and "<" not in qualname:
        code = hook.__code__   # its body too: an edited function is another hook
        body = hashlib.sha256(code.co_code + repr((code.co_consts, code.co_names)).encode()).hexdigest()[:12]
        return f"{hook.__module__}:{qualname}@{body}"
    return repr(hook)
