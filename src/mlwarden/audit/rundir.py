"""The run directory: the only place an audit writes, and the only place it ever deletes from, and there
only the files its own `run.json` lists as created by it.

A folder is a run directory when it holds an mlwarden `run.json`. `--out` may name a new folder, an empty
one or a run directory; anything else is refused, so a mistyped `--out ~/data` cannot cost a user a file.
"""
from __future__ import annotations

import json
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
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(state, dict) or not (state.get("kind") == KIND or "fingerprint" in state):
        return None
    return state


def claim(folder: Path, *, resume: bool, fingerprint: str, what: str = "--out") -> dict[str, Any]:
    """Check that the tool may write to `folder` and return the previous state ({} for a fresh folder).
    A run directory being replaced loses exactly the files its run.json lists; nothing else is touched."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{what} {folder}: exists and is not a folder")
    prev = read_state(folder) if folder.is_dir() else None
    if folder.is_dir() and prev is None and any(folder.iterdir()):
        raise UserError(f"{what} {folder}: exists, is not empty and is not an mlwarden run directory (no run.json); "
                        "choose a new or empty folder")
    if resume:
        if prev is None:
            raise UserError(f"--resume: {folder} holds no mlwarden run (no run.json); run again without --resume")
        if prev.get("fingerprint") != fingerprint:
            raise UserError(f"{folder} holds a different audit (model, data or settings changed); "
                            "drop --resume or choose another --out")
        return prev
    if prev is not None:
        remove_created(folder, prev.get("created", []))
    return {}


def remove_created(folder: Path, created: list[str]) -> None:
    dirs = set()
    for rel in created:
        p = folder / rel
        if not inside(folder, p) or p.is_symlink() or not p.is_file():
            continue
        p.unlink()
        dirs.update(q for q in p.parents if q != folder and inside(folder, q))
    for d in sorted(dirs, key=lambda q: len(q.parts), reverse=True):
        try:
            d.rmdir()          # only when empty: a file the user put there keeps its folder
        except OSError:
            pass


class RunDir:
    """Writes run.json after every step, listing every file the run created (relative paths)."""

    def __init__(self, folder: Path, state: dict[str, Any]):
        self.folder = Path(folder)
        self.state = {**state, "kind": KIND}
        self.created: list[str] = list(state.get("created", []))

    def update(self, **fields) -> None:
        self.state.update(fields)
        self.save()

    def add(self, *paths: Path | str) -> None:
        base = self.folder.as_posix().rstrip("/") + "/"
        for p in paths:
            rel = Path(p).as_posix()
            rel = rel[len(base):] if rel.startswith(base) else rel
            if rel not in self.created:
                self.created.append(rel)
        self.save()

    def files_under(self, sub: str) -> set[str]:
        base = self.folder / sub
        if not base.is_dir():
            return set()
        return {p.relative_to(self.folder).as_posix() for p in base.rglob("*") if p.is_file() and not p.is_symlink()}

    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomic(self.folder / "run.json", json.dumps({**self.state, "created": self.created}, indent=2,
                                                          default=str))
