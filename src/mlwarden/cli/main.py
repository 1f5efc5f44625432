"""`mlwarden audit | threats | report`. User mistakes print one line and exit 2."""
from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..core.errors import UserError, printable
from ..core.files import refuse_input_output, refuse_output, refuse_special, same_file

app = typer.Typer(add_completion=False, no_args_is_help=False, rich_markup_mode=None, pretty_exceptions_enable=False, help="Audit ML models for security and privacy "
                  "weaknesses. `mlwarden audit` with no arguments audits the built-in demo.")
out = Console()
err = Console(stderr=True)
SEV_STYLE = {"critical": "bold white on dark_red", "high": "bold red", "medium": "yellow", "low": "green",
             "info": "dim", "-": "dim", "timed out": "dim", "failed": "red"}


def _floats(text: str | None, what: str, n: int | None = None, cast=float):
    if text is None:
        return None
    try:
        vals = [cast(v) for v in text.replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise UserError(f"{what} '{text}' must be comma-separated numbers") from None
    if n is not None and len(vals) != n:
        raise UserError(f"{what} '{text}' needs {n} values")
    return vals


def run_name(model_path: str | None, default: str = "demo") -> str:
    """A folder name from a model's file name: never '.', '..', hidden, or a path."""
    if model_path is None:
        return default
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(model_path).stem).strip(".-")
    return name or "model"


def _regular(value: str | None, flag: str, *, folder: bool = False) -> None:
    """A path option naming a pipe, device or socket (or a folder, unless `folder`) is a one-line error before
    anything opens it: opening a named pipe waits forever (core/files.py). URLs and unset options pass."""
    if value and not value.startswith(("http://", "https://")):
        refuse_special(value, flag, folder=folder)


def _write_output(path: str, text: str, flag: str) -> None:
    """An output file the user named (--json, --markdown), written whole or not at all."""
    from ..report.report import write_atomic
    try:
        write_atomic(refuse_output(path, flag), text)
    except OSError as e:
        raise UserError(f"{flag} {path}: cannot write it ({e.strerror or e})") from None


def _names(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def _threat_names(text: str | None) -> list[str] | None:
    """--threats: None when not given (the default audit); an empty value is a mistake, not 'everything'."""
    if text is None:
        return None
    names = _names(text)
    if not names:
        raise UserError("--threats is empty: name threats or families (see `mlwarden threats`), or leave it out "
                        "for the default audit")
    return names


# options of several commands, defined once
BACKEND_OPTION = typer.Option(None, "--backend", help="where independent work runs (reference models, eps curves): "
                              "local | process | ray | ray://HOST:PORT")
WORKERS_OPTION = typer.Option(None, "--workers", help="processes for the process backend (more than 1 with the "
                              "local backend means process)")
FEDERATED_OPTION = typer.Option(False, "--federated", help="audit a federation: the data split across clients that "
                                "train with --recipe, and their malicious clients (family 'federated')")
CLIENTS_OPTION = typer.Option(None, "--clients", help="--federated: number of clients (default 6)")
ROUNDS_OPTION = typer.Option(None, "--rounds", help="--federated: rounds of training (default 5)")
PARTITION_OPTION = typer.Option(None, "--partition", help="--federated: iid | dirichlet | shards (non-IID)")
ALPHA_OPTION = typer.Option(None, "--alpha", help="--federated --partition dirichlet: concentration (default 0.5)")
AGGREGATOR_OPTION = typer.Option(None, "--aggregator", help="--federated: the server's rule, fedavg or an "
                                 "aggregation defence (krum, median, trimmed-mean, ...)")
DEVICE_OPTION = typer.Option(None, "--device", help="where the network computes: auto | cpu | cuda | cuda:N | mps "
                             "(default auto: a GPU when one is visible)")

ARCH_OPTION = typer.Option(None, "--arch", help="the network of a state_dict (.safetensors, .pt) by name, "
                          "instead of --factory: resnet18, resnet34, resnet50, mobilenet_v2, vgg11, vgg16, "
                          "timm/NAME, torchvision/NAME (`--arch list`)")

TRUST_HELP = ("comma-separated names a model file may import or call beyond the trust list (see `mlwarden "
              "scan`); only for a file whose author you trust")


def _print_version(value: bool) -> None:
    if value:
        out.print(f"mlwarden {_version()}", highlight=False)
        raise typer.Exit(0)


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="print the version and exit")):
    """Audit ML models for security and privacy weaknesses. `mlwarden audit` with no arguments audits the
    built-in demo."""


@app.command()
def audit(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="model file: .pt2, TorchScript, state_dict "
                                        "(.pt + --factory), .skops, .onnx, XGBoost .json/.ubj, LightGBM .txt, "
                                        "a Hugging Face save_pretrained folder; pickles need --allow-pickle"),
    data: Optional[str] = typer.Option(None, "--data", "-d", help=".npz, .csv, .parquet, .tsv (labelled messages), "
                                        ".txt, an image folder (one sub-folder per class), or "
                                        "digits|breast-cancer|iris|wine|stdlib-docstrings|sms-spam"),
    test_data: Optional[str] = typer.Option(None, "--test-data", help="your own test file (CSV, Parquet, .npz or an "
                                            "image folder like --data): --data is then the train file, and nothing "
                                            "is split"),
    config: Optional[str] = typer.Option(None, "--config", "-c", help="audit.toml"),
    threats: Optional[str] = typer.Option(None, "--threats", "-t", help="comma-separated threat names or families"),
    out_dir: Optional[str] = typer.Option(None, "--out", "-o", help="run directory (default mlwarden-out/<model>)"),
    profile: Optional[str] = typer.Option(None, help="quick | standard | thorough"),
    fail_on: Optional[str] = typer.Option(None, "--fail-on", help="exit 1 when a finding is at or above: "
                                          "critical | high | medium | low"),
    resume: bool = typer.Option(False, "--resume", help="reuse findings already in the run directory"),
    factory: Optional[str] = typer.Option(None, help="module:function building the network for a state_dict"),
    arch: Optional[str] = ARCH_OPTION,
    fmt: Optional[str] = typer.Option(None, "--format", help="force the model format"),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="allow unpickling the model (only trusted "
                                      "types, or those named with --trust, may load)"),
    trust: Optional[str] = typer.Option(None, "--trust", help=TRUST_HELP),
    access: Optional[str] = typer.Option(None, help="white-box | scores | labels: what the attacker gets"),
    label_column: Optional[str] = typer.Option(None, help="CSV label column (default 'label')"),
    input_range: Optional[str] = typer.Option(None, help="valid input range 'low,high' (default: inferred)"),
    input_shape: Optional[str] = typer.Option(None, help="sample shape, e.g. '1,28,28'"),
    eps: Optional[float] = typer.Option(None, help="perturbation budget as a fraction of the input range"),
    seed: Optional[int] = typer.Option(None),
    threads: Optional[int] = typer.Option(None, help="torch threads (default 1: fastest for small models)"),
    backend: Optional[str] = BACKEND_OPTION,
    workers: Optional[int] = WORKERS_OPTION,
    device: Optional[str] = DEVICE_OPTION,
    time_budget: Optional[float] = typer.Option(None, "--time-budget", help="seconds per threat"),
    recipe: Optional[str] = typer.Option(None, help="training recipe (mlp|cnn|logreg|tabular-mlp|charlm|sigmoid-mlp or "
                                         "module:function) for threats that train models"),
    endpoint: Optional[str] = typer.Option(None, help="audit a live prediction API (OIP v2 base URL "
                                           ".../v2/models/NAME, MLflow .../invocations, TF Serving ...:predict)"),
    api_key: Optional[str] = typer.Option(None, "--api-key", help="bearer token for --endpoint "
                                          "(default $MLWARDEN_API_KEY)"),
    endpoint_output: Optional[list[str]] = typer.Option(None, "--endpoint-output", help="OIP output to request "
                                                        "and read (repeat; e.g. predict_proba on MLServer)"),
    endpoint_template: Optional[str] = typer.Option(None, "--endpoint-template", help="a custom JSON API: the "
                                                    "request body as JSON, \"{rows}\" where the rows go"),
    endpoint_encrypted: Optional[int] = typer.Option(None, "--endpoint-encrypted", help="query the CKKS route of "
                                                     "`mlwarden serve --encrypted` (value: the network's "
                                                     "multiplicative depth, 1 for a linear model); needs mlwarden[he]"),
    endpoint_response: Optional[str] = typer.Option(None, "--endpoint-response", help="a custom JSON API: the "
                                                    "dotted path of the answers in its reply ('' for a bare list)"),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="an earlier run directory, report.json or "
                                           "URL to compare with (writes diff.md, diff.json; SARIF baselineState)"),
    federated: bool = FEDERATED_OPTION,
    clients: Optional[int] = CLIENTS_OPTION,
    rounds: Optional[int] = ROUNDS_OPTION,
    partition: Optional[str] = PARTITION_OPTION,
    alpha: Optional[float] = ALPHA_OPTION,
    aggregator: Optional[str] = AGGREGATOR_OPTION,
    fail_on_regression: bool = typer.Option(False, "--fail-on-regression", help="exit 1 when a headline number "
                                            "got significantly worse than in the baseline"),
):
    """Run the attacks that apply to a model and write the report."""
    cfg = _build_config(config, model=model, factory=factory, arch=arch, fmt=fmt, access=access, data=data,
                        test_data=test_data,
                        label_column=label_column, input_range=input_range, input_shape=input_shape,
                        threats=threats, out_dir=out_dir, profile=profile, fail_on=fail_on, seed=seed,
                        threads=threads, time_budget=time_budget, eps=eps, allow_pickle=allow_pickle, recipe=recipe,
                        backend=backend, workers=workers, device=device, endpoint=endpoint, api_key=api_key,
                        trust=trust, baseline=baseline,
                        endpoint_output=endpoint_output, endpoint_template=_json_option(endpoint_template,
                                                                                        "--endpoint-template"),
                        endpoint_response=endpoint_response, endpoint_encrypted=endpoint_encrypted,
                        fail_on_regression=fail_on_regression or None,
                        federation=dict(enabled=federated or None, clients=clients, rounds=rounds, partition=partition,
                                        alpha=alpha, aggregator=aggregator))
    from ..audit.runner import run_audit, write_refused
    from ..audit.subject import subject_from_config
    from ..core.registry import get_threats
    from ..io.scan import UnsafeModelFile

    get_threats(cfg.audit.threats)  # unknown names fail before anything loads
    from ..report.diff import load_baseline
    base = load_baseline(cfg.audit.baseline) if cfg.audit.baseline else None
    if cfg.audit.fail_on_regression and base is None:
        raise UserError("--fail-on-regression needs a baseline (--baseline or audit.baseline)")
    name = "endpoint" if cfg.model.endpoint else run_name(cfg.model.path)
    run_dir = Path(cfg.audit.out or Path("mlwarden-out") / name)
    _refuse_baseline_in(run_dir, cfg.audit.baseline)
    try:
        with err.status("loading the model and data" if cfg.model.path else
                        "preparing the demo subject (digits CNN; trained once, then cached)"):
            subject = subject_from_config(cfg)
    except UnsafeModelFile as e:
        write_refused(e.scan.to_dict(), run_dir, settings=_recorded(cfg),
                      subject={"model": {"name": Path(e.scan.path).name, "path": e.scan.path, "kind": e.scan.format,
                                         "access": "none (not loaded)"}, "data": {"name": cfg.data.path}},
                      protect=_inputs(cfg, config))
        err.print(f"report: {run_dir / 'report.html'} (one critical finding: unsafe-model-file)", markup=False)
        raise
    t = subject.target

    def start(total: int):   # called once every parameter is validated: a bad one prints only its error
        err.print(f"[bold]mlwarden audit[/] {t.name} ({t.kind}, {t.access.value} access) on {subject.data.name}; "
                  f"input range {subject.data.space.describe()}; profile {cfg.audit.profile}")
        return _progress(total)
    report = run_audit(subject, run_dir, settings=_recorded(cfg), overrides=cfg.threats, resume=resume,
                       progress=start, notice=_notice, baseline=base, protect=_inputs(cfg, config))
    _summary(report)
    out.print(f"report: {run_dir / 'report.html'} (also report.json, report.md, report.sarif, junit.xml"
              + (", diff.md, diff.json)" if base else ")"))
    code = report.exit_code(cfg.audit.fail_on)
    if code == 1:
        err.print(f"[red]failing: a finding is at or above --fail-on {cfg.audit.fail_on}[/]")
    elif code == 3:
        err.print("[red]failing: an attack did not complete (see its finding); the audit cannot vouch for what it "
                  "did not measure[/]")
    if base is not None:
        code = max(code, _judge(report.diff, cfg.audit.fail_on_regression))
    raise typer.Exit(code)


def _recorded(cfg) -> dict:
    """The audit's settings as run.json and report.json keep them: a baseline URL without its password."""
    from ..report.diff import redact
    d = cfg.audit.model_dump()
    if d.get("baseline"):
        d["baseline"] = redact(d["baseline"])
    return d


def _refuse_baseline_in(run_dir: Path, baseline: str | None) -> None:
    """A baseline named by its run folder is that folder's report.json: when it is the folder this run writes,
    the run would replace it (a baseline file inside the run folder is an input the run keeps, rundir.py)."""
    if not baseline or baseline.lower().startswith(("http://", "https://")) or not os.path.isdir(baseline):
        return
    if os.path.realpath(baseline) == os.path.realpath(run_dir):
        raise UserError(f"--baseline {baseline}: is the run folder this audit writes, whose report.json it would "
                        "replace; name another --out")


def _judge(diff: dict, fail_on_regression: bool) -> int:
    """Print the baseline comparison; 1 on a significant regression when asked to fail on one."""
    from ..report.diff import markdown
    out.print(markdown(diff), markup=False, highlight=False, soft_wrap=True)
    if fail_on_regression and not diff["comparable"]:
        raise UserError("cannot judge regressions: the audit's settings changed since the baseline ("
                        + "; ".join(diff["settings_changed"]) + ")")
    if fail_on_regression:   # what the gate could not judge, said, not passed over (as harden says it)
        for row in diff["rows"]:
            if row.get("incomparable"):
                _notice(printable(f"--fail-on-regression cannot judge {row['threat']}: {row['incomparable']}"))
    if fail_on_regression and diff["regressions"]:
        err.print(printable(f"failing: significant regression in {', '.join(diff['regressions'])}"), markup=False)
        return 1
    return 0


def _inputs(cfg, config: str | None) -> list[str]:
    """Every existing file or folder the command was told to read (config, model, data, baseline, and any
    other path in the configuration): a run directory never loses one (audit/rundir.py)."""
    found: list[str] = [config] if config else []

    def walk(v):
        if isinstance(v, str):
            found.append(v)
        elif isinstance(v, dict):
            for w in v.values():
                walk(w)
        elif isinstance(v, (list, tuple)):
            for w in v:
                walk(w)
    d = cfg.model_dump()
    d["audit"].pop("out", None)
    walk(d)
    return [p for p in dict.fromkeys(found) if p and os.path.exists(p)]


def _build_config(config, *, model=None, factory=None, arch=None, fmt=None, access=None, data=None, test_data=None,
                  label_column=None,
                  input_range=None, input_shape=None, threats=None, out_dir=None, profile=None, fail_on=None,
                  seed=None, threads=None, time_budget=None, eps=None, allow_pickle=False, recipe=None,
                  endpoint=None, api_key=None, trust=None, baseline=None, fail_on_regression=None,
                  endpoint_output=None, endpoint_template=None, endpoint_response=None, endpoint_encrypted=None,
                  backend=None, workers=None,
                  device=None, federation=None):
    from ..audit.config import AuditConfig, describe_validation_error, load_config
    from pydantic import ValidationError

    if arch == "list":
        from ..io.arch import available
        out.print(available(), highlight=False, markup=False)
        raise typer.Exit(0)
    _regular(config, "--config")
    cfg = load_config(config).model_dump()
    sets = {("model", "path"): model, ("model", "factory"): factory, ("model", "arch"): arch, ("model", "format"): fmt,
            ("model", "access"): access, ("model", "recipe"): recipe, ("model", "endpoint"): endpoint,
            ("model", "api_key"): api_key, ("model", "trust"): _names(trust), ("data", "path"): data,
            ("data", "test_path"): test_data,
            ("model", "endpoint_outputs"): endpoint_output or None, ("model", "endpoint_template"): endpoint_template,
            ("model", "endpoint_response"): endpoint_response, ("model", "endpoint_encrypted"): endpoint_encrypted,
            ("data", "label_column"): label_column,
            ("data", "input_range"): _floats(input_range, "--input-range", 2),
            ("data", "input_shape"): _floats(input_shape, "--input-shape", cast=int),
            ("audit", "threats"): _threat_names(threats),
            ("audit", "out"): out_dir, ("audit", "profile"): profile, ("audit", "fail_on"): fail_on,
            ("audit", "seed"): seed, ("audit", "threads"): threads, ("audit", "time_budget_s"): time_budget,
            ("audit", "eps"): eps, ("audit", "baseline"): baseline,
            ("audit", "fail_on_regression"): fail_on_regression, ("audit", "backend"): backend,
            ("audit", "workers"): workers, ("audit", "device"): device}
    for key, val in (federation or {}).items():
        sets[("federated", key)] = val
    if allow_pickle:
        cfg["model"]["allow_pickle"] = True
    for (sec, key), val in sets.items():
        if val is not None:
            cfg[sec][key] = val
    try:
        valid = AuditConfig.model_validate(cfg)
    except ValidationError as e:
        raise UserError(describe_validation_error("options", e)) from None
    from ..core.backend import require_backend
    require_backend(valid.audit.backend)   # before the model loads: a missing extra is the first thing said
    _regular(valid.model.path, "--model", folder=True)   # the data file is checked by its loader (io/datasets.py)
    _regular(valid.audit.baseline, "--baseline", folder=True)
    return valid


def _json_option(text: str | None, flag: str):
    if text is None:
        return None
    import json
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{flag}: not valid JSON ({e.msg} at character {e.pos})") from None


_SPINNERS: list = []   # progress spinners running now; an interrupt stops them (else they swallow its message)


def _progress(total: int):
    state = {"i": 0, "status": None}

    def cb(event, item, finding):
        name = item.threat.name
        if event == "start":
            state["i"] += 1
            state["status"] = err.status(f"[{state['i']}/{total}] {name}: running")
            state["status"].start()
            _SPINNERS.append(state["status"])
            return
        if event == "cached":
            state["i"] += 1
        if state["status"] is not None:
            state["status"].stop()
            _SPINNERS.remove(state["status"])
            state["status"] = None
        sev = finding.grade   # 'timed out' or 'failed' where the attack did not finish
        tag = "cached" if event == "cached" else f"{finding.seconds:5.1f}s"
        err.print(f"[{state['i']}/{total}] {name:<20} [{SEV_STYLE[sev]}]{sev:<9}[/] {tag:>7}  "
                  f"{finding.status.value if finding.status.value != 'ok' else ''}")
    return cb


def _notice(text: str) -> None:
    err.print(f"note: {text}", markup=False, highlight=False)


def _summary(report) -> None:
    table = Table(title="mlwarden findings", show_lines=False)
    table.add_column("threat")
    table.add_column("severity")
    table.add_column("status")
    table.add_column("headline", overflow="fold")
    for threat, status, sev, head in report.summary_rows():
        cell = f"[{SEV_STYLE[sev]}]{escape(sev)}[/]" if sev in SEV_STYLE else escape(sev)
        table.add_row(escape(threat), cell, status, escape(head))
    out.print(table)


@app.command()
def harden(
    defense: str = typer.Option(..., "--defense", help="registered defence(s), comma-separated: training defences "
                                "train once together (see `mlwarden defenses`)"),
    param: Optional[list[str]] = typer.Option(None, "--param", "-p", help="a defence parameter, key=value or "
                                              "defence.key=value; several values (epsilon=1,2,4,8) sweep it"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="model file (default: the built-in demo)"),
    data: Optional[str] = typer.Option(None, "--data", "-d", help=".npz, .csv, .parquet, .tsv, .txt, an image folder, "
                                        "a built-in name"),
    test_data: Optional[str] = typer.Option(None, "--test-data", help="your own test file (CSV, Parquet, .npz or an "
                                            "image folder like --data): --data is then the train file, and nothing "
                                            "is split"),
    recipe: Optional[str] = typer.Option(None, help="how the model was trained (built-in name or module:function)"),
    config: Optional[str] = typer.Option(None, "--config", "-c", help="audit.toml"),
    threats: Optional[str] = typer.Option(None, "--threats", "-t", help="threats to audit before and after "
                                          "(default: those the defences mitigate)"),
    out_dir: Optional[str] = typer.Option(None, "--out", "-o", help="output directory (default mlwarden-out/harden-<model>)"),
    fail_on: Optional[str] = typer.Option(None, "--fail-on", help="exit 1 when a finding on the hardened model is "
                                          "at or above: critical | high | medium | low"),
    fail_on_regression: bool = typer.Option(False, "--fail-on-regression", help="exit 1 when the defence makes a "
                                            "threat's headline worse beyond noise (the verdict says WORSE)"),
    resume: bool = typer.Option(False, "--resume", help="reuse the audits already in the output directory"),
    factory: Optional[str] = typer.Option(None, help="module:function building the network for a state_dict"),
    arch: Optional[str] = ARCH_OPTION,
    fmt: Optional[str] = typer.Option(None, "--format", help="force the model format"),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="allow unpickling the model (only trusted "
                                      "types, or those named with --trust, may load)"),
    trust: Optional[str] = typer.Option(None, "--trust", help=TRUST_HELP),
    access: Optional[str] = typer.Option(None, help="white-box | scores | labels"),
    label_column: Optional[str] = typer.Option(None, help="CSV label column (default 'label')"),
    input_range: Optional[str] = typer.Option(None, help="valid input range 'low,high' (default: inferred)"),
    input_shape: Optional[str] = typer.Option(None, help="sample shape, e.g. '1,28,28'"),
    profile: Optional[str] = typer.Option(None, help="quick | standard | thorough"),
    seed: Optional[int] = typer.Option(None),
    threads: Optional[int] = typer.Option(None),
    backend: Optional[str] = BACKEND_OPTION,
    workers: Optional[int] = WORKERS_OPTION,
    device: Optional[str] = DEVICE_OPTION,
    federated: bool = FEDERATED_OPTION,
    clients: Optional[int] = CLIENTS_OPTION,
    rounds: Optional[int] = ROUNDS_OPTION,
    partition: Optional[str] = PARTITION_OPTION,
    alpha: Optional[float] = ALPHA_OPTION,
):
    """Apply defences, re-run the same audit on the hardened model, and write before/after."""
    from ..harden.run import harden as run_harden
    from ..harden.run import parse_defenses
    from ..audit.subject import subject_from_config

    chosen, sweep = parse_defenses(defense, param)
    cfg = _build_config(config, model=model, data=data, test_data=test_data, recipe=recipe, threats=threats,
                        out_dir=out_dir, factory=factory, arch=arch, fmt=fmt, allow_pickle=allow_pickle, access=access, profile=profile,
                        seed=seed, threads=threads, trust=trust, label_column=label_column, input_range=input_range,
                        input_shape=input_shape, fail_on=fail_on, backend=backend, workers=workers, device=device,
                        federation=dict(enabled=federated or None, clients=clients, rounds=rounds,
                                        partition=partition, alpha=alpha))
    with err.status("loading the model and data"):
        subject = subject_from_config(cfg)
    run_dir = Path(cfg.audit.out or Path("mlwarden-out") / f"harden-{run_name(cfg.model.path)}")
    res = run_harden(subject, chosen, run_dir, settings=cfg.audit.model_dump(), sweep=sweep,
                     threats=cfg.audit.threats, overrides=cfg.threats, resume=resume, progress=_progress,
                     stage=lambda text: err.print(f"[bold]harden[/] {escape(text)}"), notice=_notice,
                     protect=_inputs(cfg, config))
    from ..harden.render import facts, rows
    for point in res.summary["points"]:
        table = Table(title=f"mlwarden harden: {defense} ({point['label']})")
        for col in ("", "before", "after"):
            table.add_column(col, overflow="fold")
        for k, b, a in rows(point, res.summary["before"]["accuracy"]):
            table.add_row(escape(k), escape(str(b)), escape(str(a)))
        out.print(table)
        for fact in facts(point):
            out.print(f"- {fact}", highlight=False, markup=False)
    out.print(res.summary["verdict"], highlight=False, markup=False, style="bold red" if res.summary["worse"] else None)
    if fail_on_regression or cfg.audit.fail_on_regression:   # what the gate could not judge, said, not passed over
        for point in res.summary["points"]:
            for row in point["comparison"]:
                if row.get("incomparable"):
                    _notice(f"--fail-on-regression cannot judge {row['threat']} ({point['label']}): "
                            f"{row['incomparable']}")
    out.print(f"report: {run_dir / 'harden.html'} (also harden.json, harden.md, harden.sarif, before/ and after/)")
    raise typer.Exit(res.exit_code(cfg.audit.fail_on, fail_on_regression or cfg.audit.fail_on_regression))


@app.command("defenses")
def list_defenses():
    """List every defence with its kind, what it mitigates and its parameters."""
    from ..core.catalogue import describe
    table = Table(title="mlwarden defenses")
    for col in ("defence", "kind", "mitigates", "parameters"):
        table.add_column(col, overflow="fold")
    table.add_column("what", overflow="fold", min_width=30)
    for info in describe("mlwarden.defenses"):
        table.add_row(info["name"], info["kind"], ", ".join(info["mitigates"]), ", ".join(info["params"]), info["doc"])
    out.print(table)


@app.command()
def serve(
    model: Optional[str] = typer.Argument(None, help="model file (default: the built-in digits CNN)"),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="data that fixes input shape, range and classes"),
    factory: Optional[str] = typer.Option(None, help="module:function building the network for a state_dict"),
    arch: Optional[str] = ARCH_OPTION,
    fmt: Optional[str] = typer.Option(None, "--format", help="force the model format"),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="allow unpickling the model (only trusted "
                                      "types, or those named with --trust, may load)"),
    trust: Optional[str] = typer.Option(None, "--trust", help=TRUST_HELP),
    input_range: Optional[str] = typer.Option(None, help="valid input range 'low,high'"),
    input_shape: Optional[str] = typer.Option(None, help="sample shape, e.g. '1,28,28'"),
    name: str = typer.Option("model", help="model name in the URL /v2/models/NAME"),
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(8080, min=0, max=65535, help="0: any free port (the line printed at start names it)"),
    output: str = typer.Option("probabilities", help="probabilities | top-k | rounded | label"),
    top_k: int = typer.Option(1, "--top-k"),
    decimals: int = typer.Option(2, help="decimals for --output rounded"),
    api_key: Optional[list[str]] = typer.Option(None, "--api-key", help="accepted bearer token (repeat for more; "
                                                "visible in the process list: prefer --api-key-file or "
                                                "$MLWARDEN_API_KEYS)"),
    api_key_file: Optional[str] = typer.Option(None, "--api-key-file", help="file of accepted bearer tokens, one "
                                               "per line"),
    rate: Optional[float] = typer.Option(None, help="requests per second per key"),
    burst: int = typer.Option(20, help="requests a key may send at once before --rate applies"),
    budget: Optional[int] = typer.Option(None, help="total rows (queries) per key"),
    max_batch: int = typer.Option(1024, "--max-batch"),
    query_log: Optional[str] = typer.Option(None, "--query-log", help="append every query to this JSONL file"),
    detector: str = typer.Option("off", help="extraction detector (PRADA-style): off | alert | block"),
    detector_delta: float = typer.Option(0.96, "--detector-delta", help="Shapiro-Wilk W below this flags a key"),
    watermark_key: Optional[str] = typer.Option(None, "--watermark-key", help="secret for the DAWN-style watermark "
                                                "(or --watermark-key-file, or $MLWARDEN_WATERMARK_KEY)"),
    watermark_key_file: Optional[str] = typer.Option(None, "--watermark-key-file", help="file holding the "
                                                     "watermark secret"),
    watermark_rate: float = typer.Option(0.005, "--watermark-rate", help="share of queries watermarked"),
    watermark_registry: Optional[str] = typer.Option(None, "--watermark-registry",
                                                     help="JSONL of watermarked queries (for verify-copy)"),
    smoothing: Optional[float] = typer.Option(None, "--smoothing", help="serve the randomized-smoothing classifier "
                                              "at this sigma (fraction of the range): labels, -1 = abstain"),
    smoothing_draws: int = typer.Option(1000, "--smoothing-draws", help="noise draws (forward passes) per row"),
    strip: bool = typer.Option(False, "--strip", help="STRIP backdoor guard: refuse (422) inputs whose answer "
                               "survives superimposed clean images of --data (Gao et al. 2019)"),
    strip_draws: int = typer.Option(20, "--strip-draws", help="STRIP: superimpositions (forward passes) per row"),
    strip_frr: float = typer.Option(0.01, "--strip-frr", help="STRIP: share of clean inputs it may refuse"),
    encrypted: bool = typer.Option(False, "--encrypted", help="also answer CKKS-encrypted queries at "
                                   "/encrypted-infer (linear layers and square activations; needs mlwarden[he])"),
    encrypted_max_body: int = typer.Option(64 * 1024 * 1024, "--encrypted-max-body",
                                           help="body limit of /encrypted-infer in bytes"),
    threads: int = typer.Option(1),
    device: Optional[str] = DEVICE_OPTION,
):
    """Serve a model over the Open Inference Protocol v2, behind guards."""
    from pydantic import ValidationError

    from ..audit.config import describe_validation_error
    from ..audit.subject import subject_for_shape, subject_from_config
    from ..core.extras import require
    require("fastapi", "serve", "mlwarden serve")
    require("uvicorn", "serve", "mlwarden serve")
    from ..serve.app import build_app
    from ..serve.guards import GuardConfig

    for value, flag in ((query_log, "--query-log"), (api_key_file, "--api-key-file"),
                        (watermark_key_file, "--watermark-key-file"), (watermark_registry, "--watermark-registry")):
        _regular(value, flag)
    keys = _secrets(api_key, api_key_file, "MLWARDEN_API_KEYS", "--api-key-file")
    marks = _secrets([watermark_key] if watermark_key else None, watermark_key_file, "MLWARDEN_WATERMARK_KEY",
                     "--watermark-key-file")
    if len(marks) > 1:
        raise UserError("the watermark takes one secret; --watermark-key-file holds several lines")
    watermark_key = marks[0] if marks else None
    try:
        guards = GuardConfig(output=output, top_k=top_k, decimals=decimals, api_keys=keys,
                             rate_per_s=rate, burst=burst, budget=budget, max_batch=max_batch, query_log=query_log,
                             detector=detector, detector_delta=detector_delta, watermark_key=watermark_key,
                             watermark_rate=watermark_rate, watermark_registry=watermark_registry,
                             smoothing_sigma=smoothing, smoothing_draws=smoothing_draws, strip=strip,
                             strip_draws=strip_draws, strip_frr=strip_frr, key_salt=os.environ.get("MLWARDEN_KEY_SALT"),
                             encrypted=encrypted, encrypted_max_body_bytes=encrypted_max_body)
    except ValidationError as e:
        raise UserError(describe_validation_error("options", e)) from None
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise UserError(f"--name '{name}' may hold only letters, digits, '_', '.', '-'")
    from ..serve.server import listen, server
    cfg = _build_config(None, model=model, data=data, factory=factory, arch=arch, fmt=fmt, input_range=input_range,
                        input_shape=input_shape, allow_pickle=allow_pickle, threads=threads, trust=trust,
                        device=device)
    sock = listen(host, port)   # after the options, before the model loads: a port in use is one line, exit 2
    try:   # the socket is closed whatever fails after it (an in-process caller keeps running)
        if model is not None and data is None:   # no data set: the shape (and range) come from the user, not digits
            if strip:
                raise UserError("--strip needs clean images of the model's task to superimpose and calibrate on: give "
                                "--data")
            if not Path(model).exists():
                raise UserError(f"model file not found: {model}")
            if input_shape is None:
                raise UserError(f"serving {model} without --data needs --input-shape (the sample shape, e.g. 1,28,28); "
                                "add --input-range low,high to refuse inputs outside it")
            subject = subject_for_shape(cfg)
        else:
            subject = subject_from_config(cfg)
        if subject.data.modality == "messages":
            raise UserError("mlwarden serve takes numeric tensors; serving a spam filter over raw text is not supported")
        import torch
        torch.set_num_threads(threads)
        from ..audit.runner import placed
        subject, _ = placed(subject, cfg.audit.model_dump())
        clean = subject.data.x_train[:1000] if strip and len(subject.data.x_train) else None
        app_ = build_app(subject.target, subject.data.space, name, guards, clean=clean)
        bound = sock.getsockname()[1]   # the port asked for, or the one the system chose for --port 0
        err.print(f"[bold]mlwarden serve[/] {subject.target.name} at http://{host}:{bound}/v2/models/{name} "
                  f"(docs at /docs); guards: {guards.describe()}", soft_wrap=True)
        if encrypted:
            err.print("encrypted queries (/encrypted-infer) get exact scores: output rounding, the extraction detector "
                      "and the watermark cannot touch them; only the rate limit and the query budget apply", markup=False)
        server(app_, sock, guards.header_timeout_s).run(sockets=[sock])
    finally:
        sock.close()


def _secrets(given: list[str] | None, path: str | None, env: str, flag: str) -> list[str]:
    """Secrets from the command line, a file (one a line) and an environment variable (comma-separated)."""
    found = list(given or [])
    if path is not None:
        try:
            found += [ln.strip() for ln in Path(path).read_text(encoding="utf-8").splitlines() if ln.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"{flag} {path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
        if not found:
            raise UserError(f"{flag} {path}: the file holds no secret")
    found += [k.strip() for k in os.environ.get(env, "").split(",") if k.strip()]
    return list(dict.fromkeys(found))


@app.command("verify-copy")
def verify_copy_cmd(
    registry: str = typer.Option(..., help="the server's --watermark-registry file"),
    model: str = typer.Option(..., "--model", "-m", help="the served (original) model"),
    suspect: str = typer.Option(..., help="the model suspected of being copied"),
    data: str = typer.Option("digits", "--data", "-d", help="data whose test split measures ordinary disagreement"),
    factory: Optional[str] = typer.Option(None, help="module:function for --model's state_dict"),
    suspect_factory: Optional[str] = typer.Option(None, "--suspect-factory", help="module:function for --suspect"),
    arch: Optional[str] = ARCH_OPTION,
    suspect_arch: Optional[str] = typer.Option(None, "--suspect-arch", help="--arch for --suspect (default: --arch)"),
):
    """Test whether a suspect model learned this server's watermarked answers (p-value)."""
    from ..audit.subject import subject_from_config
    from ..serve.watermark import load_registry, verify_copy

    if not Path(registry).exists():
        raise UserError(f"watermark registry not found: {registry}")
    _regular(registry, "--registry")
    try:
        records = load_registry(registry)
    except ValueError as e:
        raise UserError(f"{registry}: not a watermark registry ({e})") from None
    if not records:
        raise UserError(f"{registry} holds no watermarked queries yet")
    victim = subject_from_config(_build_config(None, model=model, data=data, factory=factory, arch=arch))
    if victim.data.modality == "messages":
        raise UserError("verify-copy compares models on numeric tensors; spam filters are not supported")
    import math
    shape, size = list(victim.data.input_shape), math.prod(victim.data.input_shape)
    if len(records[0]["input"]) != size:
        raise UserError(f"{registry}: its queries hold {len(records[0]['input'])} values; {model} takes samples of "
                        f"shape {shape} ({size} values): not this model's registry")
    top = max(r["label"] for r in records)
    if top >= victim.target.n_classes:
        raise UserError(f"{registry}: watermark label {top} is not a class of {model} ({victim.target.n_classes} "
                        "classes): not this model's registry")
    other = subject_from_config(_build_config(None, model=suspect, data=data,   # the suspect's own flags, else --model's
                                              factory=suspect_factory or (None if suspect_arch else factory),
                                              arch=suspect_arch or (None if suspect_factory else arch)))
    v = verify_copy(other.target.scores, victim.target.scores, records, victim.data.x_test, victim.data.input_shape)
    verdict = "COPY" if v.copied else "not shown to be a copy"
    out.print(f"{verdict}: the suspect gives the watermark label on {v.matches} of {v.watermarks} watermarked "
              f"queries; it disagrees with the original on at most {100 * v.null_rate:.1f}% of fresh inputs; "
              f"p = {v.p_value:.3g}")
    raise typer.Exit(1 if v.copied else 0)


@app.command("scan")
def scan_cmd(
    files: list[str] = typer.Argument(..., help="model files, or folders to scan recursively (nothing is loaded)"),
    trust: Optional[str] = typer.Option(None, "--trust", help=TRUST_HELP),
    json_out: Optional[str] = typer.Option(None, "--json", help="also write the full scan as JSON to this file"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="list every reference, trusted ones too"),
):
    """Report what each model file would import, construct or call when loaded; exit 1 if any is unsafe."""
    import json as _json

    from ..io.scan import MODEL_SUFFIXES, scan_file
    trusted = frozenset(_names(trust) or ())
    if json_out:
        refuse_output(json_out, "--json")   # before the scan, not after it
        refuse_input_output(json_out, "--json", files, folders=True)
    scans, skipped = [], 0
    for f in map(Path, files):
        _regular(str(f), "scan", folder=True)
        if f.is_dir():  # in a folder, files that are neither model-like by name nor by content are passed over
            root = os.path.realpath(f)
            for p in sorted(f.rglob("*")):
                if not p.is_file():
                    continue
                if not Path(os.path.realpath(p)).is_relative_to(root):   # never read through a link leading out
                    raise UserError(f"{p}: a symbolic link to {os.path.realpath(p)}, outside the folder {f}; refused "
                                    "(mlwarden reads only what is inside the folders it is given)")
                s = scan_file(p, trusted)
                plain = s.format == "unknown" or (s.format == "pickle" and s.safe and not s.references)
                if plain and p.suffix.lower() not in MODEL_SUFFIXES:
                    skipped += 1   # text and data files (a few text files parse as an import-free pickle)
                else:
                    scans.append(s)
        elif f.is_file():
            scans.append(scan_file(f, trusted))
        else:
            raise UserError(f"model file not found: {f}")
    table = Table(title="mlwarden scan")
    for col in ("file", "format", "verdict"):
        table.add_column(col, no_wrap=col != "file", overflow="fold")
    table.add_column("what loading it would use", overflow="fold", min_width=40)
    for s in scans:
        shown = s.references if verbose else s.unsafe
        what = "; ".join([f"{r.name} [{r.kind}, {r.verdict}]" for r in shown] + s.problems) or "only trusted types"
        verdict = "[green]safe[/]" if s.safe else "[bold red]UNSAFE[/]"
        table.add_row(escape(s.path), s.format, verdict, escape(what))
    out.print(table)
    bad = [s for s in scans if not s.safe]
    out.print(f"{len(bad)} of {len(scans)} file{'s' * (len(scans) != 1)} unsafe"
              + (f"; {skipped} file{'s' * (skipped != 1)} in folders passed over (not model files)" if skipped else ""),
              highlight=False)
    if json_out:
        refuse_input_output(json_out, "--json", files, folders=True)   # again: what the scan read is never replaced
        _write_output(json_out, _json.dumps([s.to_dict() for s in scans], indent=2), "--json")
    raise typer.Exit(1 if bad else 0)


@app.command("diff")
def diff_cmd(
    old: str = typer.Argument(..., help="the baseline: a run directory, a report.json or a URL"),
    new: str = typer.Argument(..., help="the audit to judge: a run directory or a report.json"),
    fail_on_regression: bool = typer.Option(False, "--fail-on-regression", help="exit 1 on a significant "
                                            "regression (exit 2 when the settings changed and none can be judged)"),
    markdown_out: Optional[str] = typer.Option(None, "--markdown", help="also write the summary (for a pull "
                                               "request comment) to this file"),
    json_out: Optional[str] = typer.Option(None, "--json", help="also write the comparison as JSON"),
):
    """Compare two audits: each headline number with the 95% interval of its change; regressions only
    where the interval excludes zero in the worse direction."""
    from ..report.diff import diff_reports, load_baseline, markdown
    from ..report.report import Report, dumps
    if markdown_out and json_out and (os.path.realpath(markdown_out) == os.path.realpath(json_out)
                                      or same_file(markdown_out, json_out)):
        raise UserError(f"--markdown and --json name one file ({json_out}): name two")
    for path, flag in ((markdown_out, "--markdown"), (json_out, "--json")):
        if path:
            refuse_output(path, flag)   # before the reports are read, not after
            refuse_input_output(path, flag, (old, new), folders=True)   # nothing in a run folder it reads
    d = diff_reports(load_baseline(old), Report.load(new))
    if markdown_out:
        refuse_input_output(markdown_out, "--markdown", (old, new), folders=True)
        _write_output(markdown_out, markdown(d), "--markdown")
    if json_out:
        refuse_input_output(json_out, "--json", (old, new), folders=True)
        _write_output(json_out, dumps(d), "--json")
    raise typer.Exit(_judge(d, fail_on_regression))


@app.command("threats")
def list_threats():
    """List every threat with its family, the access it needs and its MITRE ATLAS technique IDs."""
    from ..core.catalogue import describe
    threats = describe("mlwarden.threats")
    if out.width < 140:   # a narrow terminal: one block per threat, nothing cut off
        for d in threats:
            out.print(f"[bold]{d['name']}[/]  {d['family']}, needs {d['needs']}, {'/'.join(d['modalities'])} data"
                      f"{', in the default audit' if d['default'] else ''}", highlight=False)
            out.print(f"  {escape(d['doc'])}", highlight=False)
            out.print(f"  ATLAS {' '.join(d['atlas'])}" if d["atlas"] else "", highlight=False)
        return
    table = Table(title="mlwarden threats")
    for col in ("threat", "family", "needs", "data", "ATLAS", "default"):
        table.add_column(col, no_wrap=True)
    table.add_column("what", overflow="fold", min_width=30)
    for d in threats:
        table.add_row(d["name"], d["family"], d["needs"], "/".join(d["modalities"]), " ".join(d["atlas"]),
                      "yes" if d["default"] else "", d["doc"])
    out.print(table)


@app.command("report")
def rerender(run_dir: str = typer.Argument(..., help="a run directory holding report.json (or that file)")):
    """Re-render report.html, .md, .sarif and junit.xml from a run directory's report.json. Writes only
    into a run directory mlwarden proves it made, and only over the files it proves it wrote there."""
    from ..audit.rundir import open_run
    from ..report.report import FILES, Report
    rep = Report.load(run_dir)   # a missing, unreadable or malformed report says so first
    folder = Path(run_dir) if Path(run_dir).is_dir() else Path(run_dir).parent
    run = open_run(folder, "mlwarden report:")
    paths = rep.save(folder, guard=run.check_write, names=tuple(n for n in FILES if n != "report.json"),
                     write=run.write)
    out.print("wrote " + ", ".join(str(p) for p in paths.values()))


# Typer vendors click in recent releases; its usage-error base class is reachable through BadParameter.
_CLICK_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _interrupted():
    while _SPINNERS:   # a running spinner holds the terminal: what is printed now would never be shown
        _SPINNERS.pop().stop()
    err.show_cursor(True)   # a progress spinner hides the cursor; give the terminal back as it was
    err.print("\ninterrupted: finished findings are kept; run the same command again with --resume to continue",
              markup=False)
    sys.exit(130)


def entry() -> None:
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    logging.getLogger("torch").setLevel(logging.CRITICAL)   # its loaders log tracebacks before raising; ours is the one line
    cmd = typer.main.get_command(app)
    try:
        code = cmd.main(args=sys.argv[1:], prog_name="mlwarden", standalone_mode=False)
    except UserError as e:
        err.print(f"error: {printable(str(e))}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except _CLICK_ERROR as e:
        err.print(f"error: {printable(e.format_message())}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        _interrupted()
    except Exception as e:  # noqa: BLE001 - Exit/Abort classes differ between typer versions
        if type(e).__name__ == "Abort":
            _interrupted()
        if hasattr(e, "exit_code"):
            sys.exit(e.exit_code)
        _crashed(e)
    except BaseException as e:   # pyo3's PanicException (a Rust panic in tokenizers) is no Exception
        if isinstance(e, (SystemExit, GeneratorExit)):
            raise
        _crashed(e)
    if code == 130:   # typer turns a KeyboardInterrupt into exit code 130; no command returns 130 itself
        _interrupted()
    sys.exit(code if isinstance(code, int) else 0)


INTERNAL_ERROR = 3   # exit 1 means a finding at or above --fail-on, 2 bad input; a bug in mlwarden is neither


def _crashed(e: BaseException) -> None:
    """A bug in mlwarden: one line naming it and where the traceback went, and exit code 3."""
    import tempfile
    import traceback
    fd, path = tempfile.mkstemp(prefix="mlwarden-crash-", suffix=".txt")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(f"mlwarden {_version()}\ncommand: {' '.join(sys.argv)}\n\n")
        traceback.print_exception(e, file=f)
    err.print(f"internal error: {type(e).__name__}: {str(e)[:200]}. This is a bug in mlwarden, not in your input; "
              f"please report it with the traceback in {path} and the command you ran.", markup=False,
              highlight=False, soft_wrap=True)
    sys.exit(INTERNAL_ERROR)


def _version() -> str:
    from .._version import __version__
    return __version__
