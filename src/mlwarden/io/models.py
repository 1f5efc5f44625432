"""Loading a user's model into a Target. Nothing is unpickled unless the user allows it explicitly."""
from __future__ import annotations

import inspect
import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..core.data import Dataset
from . import FORMATS
from ..core.errors import UserError
from ..core.extras import require
from ..core.recipe import load_entry_point
from ..core.target import Access, Target, TorchTarget, sklearn_target
from ..text.filters import FilterTarget, check_text_pipeline
from ..text.messages import MODALITY
from .boosters import LIBRARY, booster_target
from .catboost_files import catboost_target
from .guard import guarded_load
from .onnx_torch import onnx_target
from .pt2 import load_exported
from .validate import validate_estimator
from .scan import FileScan, UnsafeModelFile, scan_file
from .pickled import _load_pickle, _load_skops



def detect_format(path: Path, factory: str | None) -> str:
    suf = path.suffix.lower()
    if suf == ".pt2":
        return "export"
    if suf == ".onnx":
        return "onnx"
    if suf == ".skops":
        return "skops"
    if suf in (".pkl", ".pickle", ".joblib"):
        return "pickle"
    if suf in (".pt", ".pth", ".ts", ".bin", ".safetensors"):
        if factory:
            return "state-dict"
        if suf == ".safetensors":
            raise UserError(f"{path}: a .safetensors file holds weights only; pass --arch NAME (e.g. resnet18) or "
                            "--factory module:function")
        return "torchscript"
    raise UserError(f"{path}: unknown model format '{suf}' (.pt2, .pt/.pth + --factory, TorchScript, "
                    f".skops, .onnx; pickles only with --allow-pickle)")


def _state_dict(path: Path) -> dict:
    if path.suffix.lower() == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise UserError(f"{path}: reading .safetensors needs the 'safetensors' package") from None
        try:
            return load_file(str(path))
        except Exception as e:  # noqa: BLE001 - a malformed file the scan let through still gets one line
            raise UserError(f"{path}: cannot read safetensors ({type(e).__name__}: {str(e)[:160]})") from None
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UserError(f"{path}: not a plain state_dict ({str(e).splitlines()[0][:160]}); a full pickled model "
                        "needs --allow-pickle") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise UserError(f"{path}: cannot read weights ({str(e).splitlines()[0][:160]})") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise UserError(f"{path}: expected a state_dict (a dict of tensors), found {type(sd).__name__}")
    return sd


def load_torch_module(path: Path, fmt: str, factory: str | None, data: Dataset, allow_pickle: bool,
                      scan: FileScan):
    if fmt == "export":   # never torch.export.load: it unpickles members unrestricted (io/pt2.py)
        trusted = frozenset(r.name for r in scan.references if r.verdict == "trusted-by-user")
        return load_exported(path, path.read_bytes(), trusted)
    if fmt == "torchscript":
        try:
            return torch.jit.load(str(path), map_location="cpu")
        except Exception:  # noqa: BLE001
            raise UserError(f"{path}: not TorchScript; for a state_dict pass --factory module:function, "
                            "for a pickled nn.Module pass --allow-pickle") from None
    if fmt == "state-dict":
        if not factory:
            raise UserError(f"{path}: a state_dict needs --factory module:function to build the network")
        make = load_entry_point(factory, "factory")
        try:
            try:
                module = make(data.input_shape, data.n_classes)
            except TypeError:
                module = make()
        except Exception as e:  # noqa: BLE001 - the user's factory rejecting the data's shape
            raise UserError(f"factory {factory} cannot build a network for input shape {list(data.input_shape)} "
                            f"and {data.n_classes} classes ({type(e).__name__}: {e})") from None
        try:
            module.load_state_dict(_state_dict(path))
        except RuntimeError as e:
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
            why = next((ln for ln in lines if "size mismatch" in ln or "Missing key" in ln or "Unexpected key" in ln),
                       lines[0] if lines else "")
            raise UserError(f"{path}: weights do not fit the network from {factory} ({why[:240]})") from None
        return module
    if fmt == "pickle":
        _refuse_pickle(path, allow_pickle)
        return _load_pickle(path, scan)
    raise UserError(f"{path}: format {fmt} is not a PyTorch format")


def _refuse_pickle(path: Path, allow_pickle: bool) -> None:
    if not allow_pickle:
        raise UserError(f"{path}: refusing to unpickle (it can run arbitrary code); pass --allow-pickle "
                        "only for a file you trust")


class OnnxScores:
    """An ONNX model as a function of numpy rows, through an onnxruntime session with the calling process's
    torch thread count (the runner's thread policy). A session cannot be pickled, so this travels to a
    backend's worker as its source and opens a session of its own there: an ONNX target's threats run side
    by side like a torch model's. The source is the model's bytes (no file needed on a Ray node) unless
    the model keeps tensors in external-data files: onnxruntime resolves those against the working
    directory for a model given as bytes, so such a model opens from its path, whose folder the scan
    checked, and a worker needs the same path."""

    def __init__(self, source: bytes | str, name: str):
        self.source, self.name = source, name
        self._open()

    def _open(self):
        ort = require("onnxruntime", "onnx", "loading an ONNX model")
        import torch
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = torch.get_num_threads(), 1
        try:
            self._sess = ort.InferenceSession(self.source, opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001
            raise UserError(f"{self.name}: not a loadable ONNX model ({str(e).splitlines()[0][:160]})") from None
        inp = self._sess.get_inputs()[0]
        self._input = inp.name
        self._want = [d if isinstance(d, int) else None for d in inp.shape[1:]]

    def __getstate__(self):
        return {"source": self.source, "name": self.name}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._open()

    def __call__(self, a: np.ndarray) -> np.ndarray:
        if len(self._want) != a.ndim - 1:
            a = a.reshape(a.shape[0], *[w if w is not None else -1 for w in self._want])
        outs = self._sess.run(None, {self._input: a.astype(np.float32)})
        scores = [o for o in outs if isinstance(o, np.ndarray) and o.ndim == 2]
        return scores[-1] if scores else outs[0]


def _onnx_target(path: Path, data: Dataset) -> Target:
    import onnx

    from .scan.formats import onnx_tensors
    raw = path.read_bytes()
    try:
        model = onnx.load_model_from_string(raw)
        external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in onnx_tensors(model))
    except Exception as e:  # noqa: BLE001 - changed since the scan read it
        raise UserError(f"{path}: not a readable ONNX model ({type(e).__name__})") from None
    # white-box when the graph converts to torch and agrees with onnxruntime, else scores-only saying why
    return onnx_target(model, OnnxScores(str(path) if external else raw, str(path)), data, path.name, path.parent)


def load_target(path: str, data: Dataset, *, fmt: str = "auto", factory: str | None = None,
                allow_pickle: bool = False, access: str | None = None, trust: list[str] | None = None,
                arch: str | None = None) -> Target:
    """Scan the file, refuse it when it would run code nobody named, then load it with the same rule. `arch`
    names the network for a state dict (io/arch.py), instead of a `factory`."""
    p = Path(path)
    if arch is not None and factory is not None:
        raise UserError("give --arch (a network by name) or --factory (your function), not both")
    if not p.exists():
        raise UserError(f"model file not found: {path}")
    if fmt not in FORMATS:
        raise UserError(f"unknown model format '{fmt}'; one of {', '.join(FORMATS)}")
    if fmt == "hf" or p.is_dir():   # a Hugging Face folder: every file scanned, then loaded (io/hf.py)
        from .hf import hf_target
        return _with_access(hf_target(p, data, frozenset(trust or ())), access, path)
    if p.suffix.lower() == ".onnx" or fmt == "onnx":   # a missing reader is an install problem, not a hostile file
        require("onnx", "onnx", "reading an ONNX model")
    scan = scan_file(p, frozenset(trust or ()))
    if scan.format == "unknown":
        raise UserError(f"{path}: unknown model format (not a torch, skops, ONNX, safetensors, XGBoost, LightGBM, "
                        "CatBoost or pickle file)")
    if not scan.safe:
        raise UnsafeModelFile(scan)
    with guarded_load(str(p), frozenset(trust or ())):
        if arch is not None:
            from .arch import arch_target
            target = arch_target(p, arch, fmt, scan.format, data)
        else:
            target = _load(p, scan, fmt, factory, data, allow_pickle)
    target.source = scan.to_dict()
    return _with_access(target, access, path)


def _with_access(target: Target, access: str | None, path: str) -> Target:
    if access is not None:
        want = Access(access)
        if not target.access.allows(want):
            raise UserError(f"{path}: a {target.kind} model gives at most {target.access.value} access, not {access}")
        target.access = want
    return target


def _load(p: Path, scan: FileScan, fmt: str, factory: str | None, data: Dataset, allow_pickle: bool) -> Target:
    """The loader for the file's format, after its scan passed (runs under the load guard)."""
    path = str(p)
    if fmt == "auto":   # XGBoost and LightGBM files are known by their content (the scan's format), not a suffix
        fmt = scan.format if scan.format in LIBRARY else detect_format(p, factory)
    if fmt in LIBRARY and scan.format != fmt:
        want = {"xgboost": "JSON or UBJSON", "lightgbm": "text", "catboost": ".cbm or JSON"}[fmt]
        raise UserError(f"{path}: --format {fmt} reads {LIBRARY[fmt]}'s own {want} model files; this file reads as "
                        f"{scan.format}")
    if data.modality == MODALITY and fmt not in ("skops", "pickle"):
        raise UserError(f"{path}: a spam filter is audited as a scikit-learn text pipeline (.skops) or, without a "
                        f"model, as the built-in filter; this is a {fmt} model")
    if fmt == "onnx":
        target = _onnx_target(p, data)
    elif fmt == "catboost":
        target = catboost_target(path, p.name, data)
    elif fmt in LIBRARY:
        target = booster_target(path, fmt, p.name, data)
    elif fmt == "skops":
        target = _estimator_target(_load_skops(p, scan), data, p.name)
    else:
        if fmt == "pickle" and p.suffix.lower() in (".pkl", ".pickle", ".joblib"):
            _refuse_pickle(p, allow_pickle)
            obj = _load_pickle(p, scan)
        else:
            obj = load_torch_module(p, fmt, factory, data, allow_pickle, scan)
        if isinstance(obj, torch.nn.Module):
            target = TorchTarget(obj, data.n_classes, data.input_shape, name=p.name)
        elif hasattr(obj, "predict"):
            target = _estimator_target(obj, data, p.name)
        else:
            raise UserError(f"{path}: holds a {type(obj).__name__}, not a model")
    return target


def _estimator_target(est, data: Dataset, name: str) -> Target:
    validate_estimator(est, name)
    if data.modality == MODALITY:   # labelled messages: a text pipeline, queried with raw text
        return FilterTarget(check_text_pipeline(est, name), name)
    return sklearn_target(est, data.n_classes, data.input_shape, name)


def probe(target: Target, data: Dataset) -> None:
    """Run two test samples through the model: shape and class-count mismatches become UserErrors."""
    x = data.x_test[:2]
    try:
        if isinstance(target, TorchTarget):
            with torch.no_grad():
                out = target._module(x)
        elif target.access.allows(Access.SCORES):
            out = target._scores(x)
        else:
            out = target._labels(x)
    except Exception as e:  # noqa: BLE001 - the model rejecting the data is a user-facing mismatch
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise UserError(f"model {target.name} cannot take data of sample shape {list(data.input_shape)}: {msg}") from None
    if out.ndim == 2:
        k = out.shape[1]
        top = int(max(data.y_train.max(), data.y_test.max()))
        if top >= k:
            raise UserError(f"labels out of range: the data has labels up to {top} but model {target.name} "
                            f"outputs {k} classes")
        if k != data.n_classes:
            data.n_classes = k
            target.n_classes = k
        if not torch.isfinite(torch.as_tensor(out)).all():
            raise UserError(f"model {target.name} returns NaN or infinite outputs")
    elif out.ndim != 1:
        raise UserError(f"model {target.name} returns shape {list(out.shape)}; expected (n, n_classes) or (n,)")


def save_module(module: torch.nn.Module, data: Dataset, path: Path, write=None) -> dict:
    """Save a trained network as a `torch.export` archive (`.pt2`): it loads in `mlwarden audit` and
    `mlwarden serve` without a factory and runs no Python code on load. Falls back to a safetensors
    state_dict (which needs the recipe's factory to load) when the network does not export. The bytes are
    made in memory and written by `write(path, data)` (a run directory's `RunDir.write`; by default
    core/files.py `write_file`), never by a library opening the path."""
    import io

    from ..core.files import write_file
    write = write or write_file
    path = Path(path)
    module = module.eval()
    example = data.x_test[:2]
    try:
        batch = torch.export.Dim("batch", min=1)
        name = next(iter(inspect.signature(module.forward).parameters))
        ep = torch.export.export(module, (example,), dynamic_shapes={name: {0: batch}})
        out = path.parent / f"{path.name}.pt2"   # not with_suffix: "model-epsilon=1.5" has no suffix to replace
        buf = io.BytesIO()
        torch.export.save(ep, buf)
        write(out, buf.getvalue())
        return {"path": str(out), "format": "export"}
    except Exception as e:  # noqa: BLE001 - some networks do not export; weights still can be saved
        from safetensors.torch import save
        out = path.parent / f"{path.name}.safetensors"
        write(out, save({k: v.contiguous() for k, v in module.state_dict().items()}))
        return {"path": str(out), "format": "safetensors", "why_not_export": f"{type(e).__name__}: {str(e)[:160]}"}
