"""The audit configuration (`--config audit.toml` and the CLI flags), validated by pydantic.
Unknown keys are errors, and every error names the file and the field."""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..core.errors import UserError
from ..core.files import MAX_NESTING, check_nesting
from ..io import FORMATS

SeverityName = Literal["critical", "high", "medium", "low"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(_Strict):
    path: str | None = None
    format: Literal[FORMATS] = "auto"
    factory: str | None = None
    arch: str | None = Field(None, description="the network for a state dict by name (resnet18, timm/resnet50, "
                             "...; io/arch.py), instead of a factory")
    allow_pickle: bool = False
    trust: list[str] = []                # names a model file may use beyond the trust list (--trust)
    access: Literal["white-box", "scores", "labels"] | None = None
    recipe: str | None = None
    endpoint: str | None = None          # a live prediction API instead of a model file
    api_key: str | None = None           # bearer token for the endpoint (or $MLWARDEN_API_KEY)
    endpoint_outputs: list[str] = []     # OIP outputs to request and read (MLServer: predict_proba)
    endpoint_template: Any = Field(None, description="a custom JSON API: the request body, '{rows}' where the "
                                                     "rows go")
    endpoint_response: str | None = Field(None, description="a custom JSON API: dotted path of the answers")
    endpoint_encrypted: int | None = Field(None, ge=1, le=8, description="query `mlwarden serve --encrypted`'s "
                                           "CKKS route; the value is the network's multiplicative depth (1: linear)")


class DataConfig(_Strict):
    path: str = "digits"
    test_path: str | None = Field(None, description="the user's own test file beside path, the train file "
                                  "(CSV, Parquet, .npz, or an image folder); without it mlwarden splits path itself")
    label_column: str = "label"
    text_column: str = Field("text", description="labelled messages in a CSV: the column holding the text")
    input_range: tuple[float, float] | None = None
    input_shape: list[Annotated[int, Field(gt=0)]] | None = None
    feature_ranges: list[tuple[float, float]] | None = Field(None, description="tabular: each feature's "
                                                               "[low, high]; evasion eps is a fraction of it")
    integer_features: list[Annotated[int, Field(ge=0)]] | None = Field(None, description="tabular: indices of "
                                                                        "features that only take whole numbers")
    test_fraction: float = Field(0.25, gt=0, lt=1)


class AuditSettings(_Strict):
    threats: list[str] | None = None
    profile: Literal["quick", "standard", "thorough"] = "quick"
    out: str | None = None
    fail_on: SeverityName | None = None
    seed: int = Field(0, ge=0, le=2**32 - 1, description="seeds python, numpy and torch")
    threads: int = Field(1, ge=1, le=1024, description="torch intra-op threads; 1 is fastest for small models on "
                         "few cores (at most 1024: each is an OS thread)")
    backend: str = Field("local", pattern=r"^(local|process|ray|ray://[A-Za-z0-9.\-]+:[0-9]{1,5})$",
                         description="where independent work runs (reference models, sweeps): local, process, "
                         "ray (a local Ray) or ray://HOST:PORT (a cluster); never changes the numbers")
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:[0-9]{1,3})?)$",
                        description="where the network computes: auto (a GPU when one is visible), cpu, cuda, "
                        "cuda:N or mps")
    workers: int | None = Field(None, ge=1, le=1024, description="processes for --backend process (default: the "
                                "CPU count); with the local backend, more than 1 means process")
    time_budget_s: float | None = Field(600, gt=0, description="per threat")
    eps: float | None = Field(None, gt=0, description="overrides every evasion threat's eps")
    baseline: str | None = Field(None, description="run directory, report.json or URL to compare with")
    fail_on_regression: bool = Field(False, description="exit 1 on a significant regression against the baseline")


class FederatedConfig(_Strict):
    """How the model is trained across clients (mlwarden audit --federated): the recipe is each client's."""
    enabled: bool = False
    clients: int = Field(6, ge=2, le=10_000)
    rounds: int = Field(5, ge=1, le=10_000)
    local_epochs: int = Field(1, ge=1, le=1000, description="FedAvg: local epochs per round")
    mode: Literal["fedavg", "fedsgd"] = "fedavg"
    sample: float = Field(1.0, gt=0, le=1, description="fraction of clients sampled each round")
    partition: Literal["iid", "dirichlet", "shards"] = "iid"
    alpha: float = Field(0.5, gt=0, description="dirichlet concentration (smaller: more skewed clients)")
    shards: int = Field(2, ge=1, description="label shards per client (partition 'shards')")
    aggregator: str = Field("fedavg", description="fedavg or a registered aggregation defence")
    aggregator_params: dict[str, Any] = {}


class AuditConfig(_Strict):
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    federated: FederatedConfig = FederatedConfig()
    audit: AuditSettings = AuditSettings()
    threats: dict[str, dict[str, Any]] = {}


def describe_validation_error(source: str, e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
    more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
    return f"{source}: {loc}: {msg}{more}"


def load_config(path: str | None) -> AuditConfig:
    if path is None:
        return AuditConfig()
    p = Path(path)
    if not p.exists():
        raise UserError(f"config file not found: {path}")
    from ..report.report import read_regular
    try:
        raw = tomllib.loads(read_regular(p).decode("utf-8"))   # a named pipe is an error, not a hang
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: malformed TOML: {e}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    except RecursionError:   # tomllib parses nested arrays and inline tables recursively
        raise UserError(f"{path}: nested more than {MAX_NESTING} levels deep (not something mlwarden reads)") from None
    check_nesting(raw, path)
    try:
        return AuditConfig.model_validate(raw)
    except ValidationError as e:
        raise UserError(describe_validation_error(path, e)) from None
