"""Builds the Subject (target + data + recipe) from a config, or from Python objects."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..core.data import Dataset, declare_features, make_dataset, shape_only
from ..core.errors import UserError
from ..core.recipe import BUILTIN_RECIPES, get_recipe
from ..core.target import Access, NumpyTarget, Target, TorchTarget, sklearn_target
from ..io.arch import arch_recipe, is_arch
from ..io.datasets import load_data
from ..io.estimator_recipe import recipe_of
from ..io.models import load_target, probe
from .config import AuditConfig, describe_validation_error
from ..io.messages import is_messages
from ..text.filters import FilterTarget, as_filter_target, recipe_for
from .demo import demo_subject, demo_text_subject, federated_client_recipe, spam_demo_subject
from .runner import Subject


def subject_from_config(cfg: AuditConfig) -> Subject:
    m, d = cfg.model, cfg.data
    if m.endpoint_encrypted is not None and m.endpoint is None:
        raise UserError("--endpoint-encrypted queries a served model's encrypted route: give its --endpoint URL")
    if cfg.federated.enabled:
        return _federated_subject(cfg)
    if m.arch is not None and m.path is None:
        raise UserError("--arch names the network of a weights file: give the file with --model")
    if m.endpoint is not None:
        return _endpoint_subject(cfg)
    if m.path is None and is_messages(d.path, d.text_column) and not m.factory:
        if m.recipe:
            raise UserError("--recipe trains networks; labelled messages are audited with the built-in spam filter "
                            "or a scikit-learn text pipeline (--model pipe.skops), which are retrained as themselves")
        data = _load(cfg)
        target, recipe = spam_demo_subject(data, cfg.audit.seed)
        return Subject(target, data, recipe, {"path": None, "demo": True, "cli": _cli([("--data", d.path)])})
    if m.path is None:
        if d.path not in ("digits", "stdlib-docstrings") or m.factory or m.format != "auto":
            raise UserError("no model given: pass --model PATH (the demos audit the built-in digits CNN, with "
                            "--data stdlib-docstrings a character language model, and with labelled messages, a .tsv "
                            "or a .csv whose header has a 'text' column, the built-in spam filter)")
        user_recipe = get_recipe(m.recipe) if m.recipe else None
        make = demo_subject if d.path == "digits" else demo_text_subject
        target, data, recipe = make(cfg.audit.seed)
        recipe = user_recipe or recipe
        if m.access:
            target.access = Access(m.access)
        cli = _cli([("--data", d.path if d.path != "digits" else None), ("--recipe", m.recipe)])
        return Subject(target, data, recipe, {"path": None, "demo": True, "cli": cli})
    data = _load(cfg)
    target = load_target(m.path, data, fmt=m.format, factory=m.factory, allow_pickle=m.allow_pickle, access=m.access,
                         trust=m.trust, arch=m.arch)
    probe(target, data)
    recipe = _user_recipe(m.recipe)
    if isinstance(target, FilterTarget):
        if m.recipe:
            raise UserError("--recipe trains networks; a scikit-learn text pipeline is retrained from a clone of itself")
        recipe = recipe_for(target.filter)
    itself = recipe_of(target)   # a scikit-learn estimator or a booster: retrained as itself, never as a network
    if itself is not None:
        if m.recipe:
            raise UserError(f"--recipe {m.recipe}: {m.path} is a {itself.model_kind}, which mlwarden retrains as itself "
                            "(its own class and hyper-parameters); drop --recipe")
        recipe = itself
    cli = _cli([("--model", m.path), ("--factory", m.factory), ("--arch", m.arch),
                ("--format", None if m.format == "auto" else m.format),
                ("--allow-pickle", m.allow_pickle), ("--trust", ",".join(m.trust or ()) or None),
                ("--access", m.access), ("--data", d.path), *_data_flags(d),
                ("--recipe", None if itself is not None or isinstance(target, FilterTarget) else
                 m.recipe or (m.arch if m.arch and is_arch(m.arch) else "RECIPE"))])
    return Subject(target, data, recipe, {"path": str(Path(m.path)), "format": m.format, "cli": cli})


def _user_recipe(name: str | None):
    """--recipe: a built-in recipe, module:function, or an architecture by name (io/arch.py) trained afresh."""
    if name and name not in BUILTIN_RECIPES and is_arch(name):
        return arch_recipe(name)
    return get_recipe(name) if name else None


def subject_for_shape(cfg: AuditConfig) -> Subject:
    """A model file with only its input shape (and range) given: what `mlwarden serve` needs without data."""
    m, d = cfg.model, cfg.data
    data = shape_only(d.input_shape, d.input_range)
    target = load_target(m.path, data, fmt=m.format, factory=m.factory, allow_pickle=m.allow_pickle, access=m.access,
                         trust=m.trust, arch=m.arch)
    probe(target, data)
    return Subject(target, data, None, {"path": str(Path(m.path)), "format": m.format})


def default_recipe(target: Target, recipe):
    """A spam filter, a scikit-learn estimator or a booster given without a recipe is retrained as itself (a
    clone of the estimator, the booster's own training)."""
    if recipe is None and isinstance(target, FilterTarget):
        return recipe_for(target.filter)
    itself = recipe_of(target)
    if itself is not None and recipe is not None:
        raise UserError(f"recipe {getattr(recipe, 'name', recipe)!r}: {target.name} is a {itself.model_kind}, which "
                        "mlwarden retrains as itself (its own class and hyper-parameters); give no recipe")
    return recipe if recipe is not None else itself


def _load(cfg: AuditConfig, raw: bool = False) -> Dataset:
    d = cfg.data
    return declare_features(load_data(d.path, label_column=d.label_column, test_fraction=d.test_fraction,
                                      seed=cfg.audit.seed, input_range=d.input_range, input_shape=d.input_shape,
                                      text_column=d.text_column, raw=raw, test_spec=d.test_path),
                             d.feature_ranges, d.integer_features)


def _cli(flags: list[tuple[str, str | bool | None]]) -> str:
    """The command-line flags that name this subject again, for the exact commands a report recommends (a
    flag given as True is a switch, written alone)."""
    import shlex
    return " ".join(k if v is True else f"{k} {shlex.quote(str(v))}" for k, v in flags if v)


def _data_flags(d) -> list[tuple[str, str | None]]:
    """How the data was read, when not by default: without these the printed command reads other data."""
    return [("--test-data", d.test_path), ("--label-column", d.label_column if d.label_column != "label" else None),
            ("--input-range", ",".join(f"{v:g}" for v in d.input_range) if d.input_range else None),
            ("--input-shape", ",".join(map(str, d.input_shape)) if d.input_shape else None)]


def as_dataset(data, input_range=None) -> Dataset:
    if isinstance(data, Dataset):
        return data
    if isinstance(data, str):
        return load_data(data, input_range=input_range)
    if isinstance(data, (tuple, list)) and len(data) == 4:
        return make_dataset("data", *data, input_range=input_range)
    raise UserError("data must be a Dataset, a built-in name or path, or (x_train, y_train, x_test, y_test)")


def as_target(model, data: Dataset, access: str | None = None) -> Target:
    if isinstance(model, Target):
        target = model
    elif data.modality == "messages":
        target = as_filter_target(model, type(model).__name__)
    elif isinstance(model, nn.Module):
        target = TorchTarget(model, data.n_classes, data.input_shape, name=type(model).__name__)
    elif hasattr(model, "predict"):
        target = sklearn_target(model, data.n_classes, data.input_shape, type(model).__name__)
    elif callable(model):
        def fn(a: np.ndarray):
            out = model(a)
            return out.detach().numpy() if torch.is_tensor(out) else out
        target = NumpyTarget(fn, data.n_classes, data.input_shape, Access.SCORES, "callable")
    else:
        raise UserError(f"cannot audit a {type(model).__name__}: pass an nn.Module, a scikit-learn estimator, "
                        "a callable returning scores, or a Target")
    if access is not None:
        target.access = Access(access)
    return target


def _endpoint_subject(cfg: AuditConfig) -> Subject:
    import os

    from ..core.extras import require
    require("httpx", "serve", "auditing an --endpoint")
    from ..io.http_target import HttpTarget
    m = cfg.model
    if m.path is not None:
        raise UserError("give either --model or --endpoint, not both")
    if m.endpoint_encrypted is not None:
        return _encrypted_endpoint_subject(cfg)
    if not m.endpoint.startswith(("http://", "https://")):
        raise UserError(f"--endpoint '{m.endpoint}' must be an http:// or https:// URL")
    data = _load(cfg, raw=True)   # a model served elsewhere was trained on natural feature values
    if data.modality == "messages":
        raise UserError("--endpoint audits of a spam filter are not supported: poisoning needs its training recipe")
    target = HttpTarget(m.endpoint, data.n_classes, data.input_shape,
                        api_key=m.api_key or os.environ.get("MLWARDEN_API_KEY"), outputs=m.endpoint_outputs,
                        template=m.endpoint_template, response_path=m.endpoint_response)
    if m.access:
        wanted = Access(m.access)
        if not target.access.allows(wanted):
            raise UserError(f"--access {wanted.value}: the endpoint answers {target.access.value} only")
        target.access = wanted
    recipe = get_recipe(m.recipe) if m.recipe else None
    return Subject(target, data, recipe, {"endpoint": m.endpoint, "protocol": target.protocol,
                                          "sent": f"{data.name}, each row as {target.input_name} "
                                                  f"{list(target.wire_shape)} {target.datatype}"})


def _federated_subject(cfg: AuditConfig) -> Subject:
    """A federation: the data split across clients that train with the recipe, and the global model (the
    given --model, or the one the federation trains here)."""
    from pydantic import ValidationError

    from ..federated.aggregate import rule_for
    from ..federated.recipe import FederatedRecipe
    m, f = cfg.model, cfg.federated
    if m.endpoint is not None:
        raise UserError("--federated describes how a model is trained across clients; it cannot audit an --endpoint")
    data = _load(cfg)
    if data.modality not in ("image", "tabular"):
        raise UserError(f"--federated trains networks on image or tabular data; {data.name} is {data.modality}")
    client = get_recipe(m.recipe) if m.recipe else federated_client_recipe()
    fed = FederatedRecipe.of(client.with_(epochs=f.local_epochs), clients=f.clients, rounds=f.rounds, mode=f.mode,
                             sample=f.sample, partition=f.partition, alpha=f.alpha, shards=f.shards,
                             aggregator=f.aggregator, aggregator_params=dict(f.aggregator_params))
    try:
        rule_for(fed.aggregator, fed.aggregator_params)
    except ValidationError as e:
        raise UserError(describe_validation_error(f"federated.aggregator_params ({fed.aggregator})", e)) from None
    except TypeError as e:
        raise UserError(f"federated.aggregator_params ({fed.aggregator}): {e}") from None
    if m.path is not None:
        target = load_target(m.path, data, fmt=m.format, factory=m.factory, allow_pickle=m.allow_pickle,
                             access=m.access, trust=m.trust, arch=m.arch)
        probe(target, data)
    else:
        from ..federated.partition import partition
        partition(data.y_train, fed.clients, fed.partition, alpha=fed.alpha, shards=fed.shards, seed=cfg.audit.seed)
        model = fed.fit(data.x_train, data.y_train, data.n_classes, seed=cfg.audit.seed)
        target = TorchTarget(model, data.n_classes, data.input_shape,
                             name=f"federated {client.name} ({fed.clients} clients, {fed.aggregator})")
        if m.access:
            target.access = Access(m.access)
    flags = [("--model", m.path), ("--data", d if (d := cfg.data.path) != "digits" else None), ("--recipe", m.recipe),
             ("--clients", str(f.clients)), ("--rounds", str(f.rounds)),
             ("--partition", f.partition if f.partition != "iid" else None)]
    return Subject(target, data, fed, {"path": str(Path(m.path)) if m.path else None, "demo": m.path is None,
                                       "federation": fed.summary(), "cli": "--federated " + _cli(flags)})


def _encrypted_endpoint_subject(cfg: AuditConfig) -> Subject:
    """`mlwarden serve --encrypted`'s CKKS route: the audit encrypts its queries and reads exact scores."""
    import os

    from ..core.extras import require
    require("tenseal", "he", "auditing an encrypted endpoint")
    from ..io.encrypted import EncryptedClient, EncryptedHttpTarget
    m = cfg.model
    if not m.endpoint.startswith(("http://", "https://")):
        raise UserError(f"--endpoint '{m.endpoint}' must be an http:// or https:// URL")
    data = _load(cfg, raw=True)
    client = EncryptedClient(m.endpoint, depth=m.endpoint_encrypted,
                             api_key=m.api_key or os.environ.get("MLWARDEN_API_KEY"))
    target = EncryptedHttpTarget(client, data.n_classes, data.input_shape, name=f"encrypted {m.endpoint}")
    recipe = get_recipe(m.recipe) if m.recipe else None
    return Subject(target, data, recipe, {"endpoint": m.endpoint, "protocol": "CKKS /encrypted-infer",
                                          "note": "encrypted answers are exact scores: output rounding, the extraction "
                                                  "detector and the watermark cannot touch them; a rate limit and a "
                                                  "query budget are the only guards left"})
