"""Optional parts live in extras (`pip install 'mlwarden[dp]'`): a missing one is a one-line error that
names the extra, never an ImportError traceback."""
from __future__ import annotations

import importlib
from types import ModuleType

from .errors import UserError

EXTRAS = {"dp": "opacus", "serve": "fastapi, uvicorn, httpx", "onnx": "onnx, onnxruntime", "ray": "ray", "flower": "flwr", "he": "tenseal", "parquet": "pyarrow",
          "trees": "xgboost, lightgbm, catboost", "hf": "transformers, tokenizers"}


def require(module: str, extra: str, what: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{what} needs the '{extra}' extra ({EXTRAS.get(extra, module)}): "
                        f"pip install 'mlwarden[{extra}]'") from None
