"""Where mlwarden keeps what it can rebuild (demo weights, reference models): $MLWARDEN_CACHE or
~/.cache/mlwarden. Files are written atomically so an interrupted run never leaves a half-written one."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch


def cache_dir() -> Path:
    return Path(os.environ.get("MLWARDEN_CACHE", Path.home() / ".cache" / "mlwarden"))


def key_of(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def tensor_digest(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def save_state(state: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_state(path: Path) -> dict | None:
    """A weights-only load; a missing or corrupt file is None (it is rebuilt, never fatal)."""
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001
        path.unlink(missing_ok=True)
        return None
