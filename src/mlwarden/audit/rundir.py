"""The run directory: the only place an audit writes, and the only place it ever deletes from, and there
only the files its own `run.json` lists as created by it.

A folder is a run directory when it holds an mlwarden `run.json`. `--out` may name a new folder, an empty
one or a run directory; anything else is refused, so a mistyped `--out ~/data` cannot cost a user a file.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from ..report.report import inside, write_atomic

KIND = "mlwarden-run"


def read_state(folder: Path) -> dict[str, Any] | None:
    """The run.json of an mlwarden run directory, or None when `folder` is not one."""
    path = folder / "run.json"
    if not path.is_file() or path.is_symlink():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(state, dict):
        return None
    legacy = {"fingerprint", "settings", "subject", "threats"} <= state.keys()   # run.json before 0.2
    return state if state.get("kind") == KIND or legacy else None


def _created(state: dict[str, Any]) -> list[dict[str, str]]:
    """The files a run.json says its run created, as {"path", "sha256"} records; anything else is ignored."""
    if state.get("kind") != KIND:   # a legacy run.json never listed files
        return []
    return _records(state.get("created"))


def _records(items) -> list[dict[str, str]]:
    if not isinstance(items, list):
        return []
    return [c for c in items if isinstance(c, dict) and isinstance(c.get("path"), str)
            and isinstance(c.get("sha256"), str)]


def _links(folder: Path, limit: int = 100_000) -> list[Path]:
    found = []
    for i, p in enumerate(folder.rglob("*")):
        if i >= limit:
            break
        if p.is_symlink():
            found.append(p)
    return found


def claim(folder: Path, *, resume: bool, fingerprint: str, what: str = "--out") -> dict[str, Any]:
    """Check that the tool may write to `folder` and return the previous state ({} for a fresh folder).
    A run directory being replaced loses exactly the files its run.json lists with the content the run
    wrote; nothing else is touched. The tool never writes through a link."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{what} {folder}: exists and is not a folder")
    if not folder.exists() and not resume:
        try:
            folder.mkdir(parents=True)
        except OSError as e:
            raise UserError(f"{what} {folder}: cannot create it ({e.strerror})") from None
    if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"{what} {folder}: not writable")
    prev = read_state(folder) if folder.is_dir() else None
    if folder.is_dir() and prev is None and any(folder.iterdir()):
        raise UserError(f"{what} {folder}: exists, is not empty and is not an mlwarden run directory (no run.json); "
                        "choose a new or empty folder")
    if folder.is_dir():
        links = _links(folder)
        if links:
            raise UserError(f"{what} {folder}: holds a link ({links[0].relative_to(folder)}); mlwarden does not "
                            "write through links: choose a new or empty folder")
    if resume:
        if prev is None:
            raise UserError(f"--resume: {folder} holds no mlwarden run (no run.json); run again without --resume")
        if prev.get("fingerprint") != fingerprint:
            raise UserError(f"{folder} holds a different audit (model, data or settings changed); "
                            "drop --resume or choose another --out")
        return {**prev, "created": _created(prev)}
    if prev is not None:
        remove_created(folder, _created(prev))
    return {}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def remove_created(folder: Path, created: list[dict[str, str]]) -> None:
    dirs = set()
    for c in created:
        p = folder / c["path"]
        if not inside(folder, p) or p.is_symlink() or not p.is_file() or sha256(p) != c["sha256"]:
            continue   # outside, a link, gone, or no longer what the run wrote: not the tool's to delete
        p.unlink()
        dirs.update(q for q in p.parents if q != folder and inside(folder, q))
    for d in sorted(dirs, key=lambda q: len(q.parts), reverse=True):
        try:
            d.rmdir()          # only when empty: a file the user put there keeps its folder
        except OSError:
            pass


class RunDir:
    """Writes run.json after every step, listing every file the run created (relative path and content hash)."""

    def __init__(self, folder: Path, state: dict[str, Any]):
        self.folder = Path(folder)
        self.state = {**state, "kind": KIND}
        self.created: list[dict[str, str]] = _records(state.get("created"))

    def add(self, *paths: Path | str) -> None:
        base = self.folder.as_posix().rstrip("/") + "/"
        known = {c["path"]: c for c in self.created}
        for p in paths:
            rel = Path(p).as_posix()
            rel = rel[len(base):] if rel.startswith(base) else rel
            full = self.folder / rel
            if not full.is_file() or not inside(self.folder, full):
                continue
            record = {"path": rel, "sha256": sha256(full)}
            if rel in known:
                known[rel].update(record)
            else:
                self.created.append(record)
                known[rel] = record
        self.save()

    @property
    def created_paths(self) -> set[str]:
        return {c["path"] for c in self.created}

    def files_under(self, sub: str) -> set[str]:
        base = self.folder / sub
        if not base.is_dir():
            return set()
        return {p.relative_to(self.folder).as_posix() for p in base.rglob("*") if p.is_file() and not p.is_symlink()}

    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomic(self.folder / "run.json", json.dumps({**self.state, "created": self.created}, indent=2,
                                                          default=str))
