"""The run directory: the only place an audit writes, and the only place it ever deletes from.

Every run directory gets a secret key of its own, kept outside the folder, in the cache
(`$MLWARDEN_CACHE/run-keys`, by default `~/.cache/mlwarden/run-keys`), under a name made of the folder's
resolved path, device and inode. `run.json` carries an HMAC under that key of the folder itself and of each
file the run created (relative path and SHA-256). Whoever can write into the folder but cannot read the
user's cache cannot forge one, and a run.json copied from another folder proves nothing here. So:

- `--out` may name a new folder, an empty one (which gets a fresh key), or a run directory whose run.json
  proves itself. Anything else is refused, a mistyped `--out ~/data` as much as a forged run.json, one from
  an mlwarden that kept no proofs, or one whose key is gone (a moved folder, a cleared cache).
- A file is deleted or replaced only when run.json lists it with a valid proof and it still holds what the
  run wrote; an input of the run (model, data, config, baseline) never, proven or not.
- A proven file that changed since the run wrote it (a report the user edited) stops the run before it
  starts; no file the run wants to write is replaced unless it is such a proven, unchanged one.
- The tool never writes through a link, and reads only regular files (a named pipe is an error, not a hang).
- Every file is written by one primitive (core/files.py `Folder.write`): relative to a descriptor of the folder
  the run claimed (checked on each write: a folder swapped for a link or another folder stops the run), into a
  new temporary file renamed over the name (a link planted there is replaced, never written through; a file
  with several hard links is refused). The run records exactly what it wrote, with the SHA-256 of the bytes
  it wrote, never what a scan of a folder finds.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import json
import os
import secrets
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterable

from ..core.cache import cache_dir
from ..core.errors import UserError
from ..core.files import Dest, Folder
from ..report.report import inside, open_regular, read_regular

KIND = "mlwarden-run"
LAYOUT = 2   # run.json with proofs; 1 (and the keyless layout before it) listed files anyone could add to


def keys_dir() -> Path:
    """Where the run directories' keys live: outside every run directory, in the user's cache."""
    return cache_dir() / "run-keys"


def _key_path(folder: Path) -> Path:
    st = os.stat(folder)
    ident = f"{os.path.realpath(folder)}\0{st.st_dev}\0{st.st_ino}"
    return keys_dir() / f"{hashlib.sha256(ident.encode()).hexdigest()}.key"


def _load_key(folder: Path) -> bytes | None:
    try:
        text = read_regular(_key_path(folder)).decode("ascii").strip()
        key = bytes.fromhex(text)
    except (UserError, OSError, UnicodeDecodeError, ValueError):
        return None
    return key if len(key) == 32 else None


def _new_key(folder: Path) -> bytes:
    """A fresh key for a new or empty folder: proofs made for an earlier folder at this place prove nothing."""
    key = secrets.token_bytes(32)
    path = _key_path(folder)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".key.", suffix=".tmp")   # mode 0600
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(key.hex())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise UserError(f"cannot keep the run directory's key in {path.parent} ({e.strerror}); "
                        "set MLWARDEN_CACHE to a writable folder") from None
    return key


def _mac(key: bytes, *parts: str) -> str:
    return hmac.new(key, "\0".join((KIND, *parts)).encode(), hashlib.sha256).hexdigest()


def _same(a: Any, b: str) -> bool:
    return isinstance(a, str) and hmac.compare_digest(a.encode(), b.encode())


def _proven(key: bytes | None, state: dict[str, Any]) -> bool:
    """True when run.json was written by this installation for this folder."""
    return key is not None and state.get("layout") == LAYOUT and _same(state.get("proof"), _mac(key, "folder"))


def _verified(key: bytes, items) -> list[dict[str, str]]:
    """The records of `items` whose proof verifies: {"path", "sha256", "proof"}; anything else is ignored."""
    if not isinstance(items, list):
        return []
    return [{"path": c["path"], "sha256": c["sha256"], "proof": c["proof"]} for c in items
            if isinstance(c, dict) and isinstance(c.get("path"), str) and isinstance(c.get("sha256"), str)
            and _same(c.get("proof"), _mac(key, "file", c["path"], c["sha256"]))]


def read_state(folder: Path) -> dict[str, Any] | None:
    """The run.json of an mlwarden run directory (proven or not), or None when `folder` holds none."""
    path = Path(folder) / "run.json"
    if path.is_symlink() or not path.is_file():
        return None
    try:
        state = json.loads(read_regular(path).decode("utf-8"))
    except (UserError, OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(state, dict):
        return None
    legacy = {"fingerprint", "settings", "subject", "threats"} <= state.keys()   # run.json before 0.2
    return state if state.get("kind") == KIND or legacy else None


def _unproven(what: str, folder: Path, state: dict[str, Any]) -> UserError:
    why = ("is from an mlwarden that kept no proofs of what it wrote" if state.get("layout") != LAYOUT else
           "carries no proof this installation can check (copied from another folder, forged, or the folder's "
           f"key in {keys_dir()} is gone: moved, renamed or a cleared cache)")
    return UserError(f"{what} {folder}: is not an mlwarden run directory this installation can prove it made: its "
                     f"run.json {why}; mlwarden deletes and overwrites nothing there: choose a new or empty folder")


class Inputs:
    """The files a run reads (model, data, config, baseline): never deleted or replaced, even when a proven
    record names one (an audit of a hardened model saved in the folder it writes to). A folder given as an
    input protects what it holds when it lies inside the run directory."""

    def __init__(self, paths: Iterable[str | Path | None], folder: Path):
        self.files: set[tuple[int, int]] = set()
        self.dirs: list[str] = []
        root = os.path.realpath(folder)
        for p in paths:
            if not p:
                continue
            try:
                st = os.stat(p)
            except (OSError, ValueError):
                continue
            if stat.S_ISDIR(st.st_mode):
                real = os.path.realpath(p)
                if real != root and os.path.commonpath([root, real]) == root:
                    self.dirs.append(real)
            else:
                self.files.add((st.st_dev, st.st_ino))

    def holds(self, path: Path) -> bool:
        try:
            st = os.stat(path)
        except OSError:
            return False
        real = os.path.realpath(path)
        return (st.st_dev, st.st_ino) in self.files or any(os.path.commonpath([d, real]) == d for d in self.dirs)


def _links(folder: Path, limit: int = 100_000) -> list[Path]:
    found = []
    for i, p in enumerate(folder.rglob("*")):
        if i >= limit:
            break
        if p.is_symlink():
            found.append(p)
    return found


def sha256(path: Path) -> str:
    """The SHA-256 of a regular file (a pipe or device is a one-line error, never a read that hangs)."""
    h = hashlib.sha256()
    with os.fdopen(open_regular(path), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _changed(path: Path, digest: str) -> str | None:
    """Why the file at `path` is not what the run wrote (None: it is, or it is gone)."""
    if not os.path.lexists(path):
        return None
    mode = os.lstat(path).st_mode
    if stat.S_ISLNK(mode):
        return "was replaced by a link"
    if not stat.S_ISREG(mode):
        return "was replaced by something that is not a regular file (a folder, a named pipe or a device)"
    return "changed since mlwarden wrote it" if sha256(path) != digest else None


def claim(folder: Path, *, resume: bool, fingerprint: str, what: str = "--out",
          inputs: Iterable[str | Path | None] = (), writes: Iterable[str] = ()) -> dict[str, Any]:
    """Check that the tool may write to `folder` and return the previous state ({} for a fresh folder; on
    --resume its proven records). A run directory being replaced loses exactly the files its run.json proves
    the run wrote, with the content it wrote, less the run's `inputs`; nothing else is touched. `writes`:
    files (relative paths) the run will write; one that exists and is not such a record stops the run here,
    before any work. The tool never writes through a link."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{what} {folder}: exists and is not a folder")
    if not folder.exists() and not resume:
        try:
            folder.mkdir(parents=True)
        except OSError as e:
            raise UserError(f"{what} {folder}: cannot create it ({e.strerror})") from None
    if not folder.is_dir():
        raise UserError(f"--resume: {folder} holds no mlwarden run (no run.json); run again without --resume")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"{what} {folder}: not writable")
    if inside(folder, keys_dir()):
        raise UserError(f"{what} {folder}: holds mlwarden's cache ({keys_dir().parent}), whose keys prove what "
                        "a run wrote; choose a folder outside it, or set MLWARDEN_CACHE elsewhere")
    links = _links(folder)
    if links:
        raise UserError(f"{what} {folder}: holds a link ({links[0].relative_to(folder)}); mlwarden does not "
                        "write through links: choose a new or empty folder")
    state = read_state(folder)
    if state is None:
        if any(folder.iterdir()):
            raise UserError(f"{what} {folder}: exists, is not empty and is not an mlwarden run directory (no "
                            "run.json); choose a new or empty folder")
        if resume:
            raise UserError(f"--resume: {folder} holds no mlwarden run (no run.json); run again without --resume")
        _new_key(folder)
        return {}
    key = _load_key(folder)
    if not _proven(key, state):
        raise _unproven(what, folder, state)
    if resume and state.get("fingerprint") != fingerprint:
        raise UserError(f"{folder} holds a different audit (model, data or settings changed); "
                        "drop --resume or choose another --out")
    protected = Inputs(inputs, folder)
    records = [c for c in _verified(key, state.get("created"))
               if inside(folder, folder / c["path"]) and not protected.holds(folder / c["path"])]
    for c in records:
        why = _changed(folder / c["path"], c["sha256"])
        if why:
            raise UserError(f"{folder / c['path']}: {why}; mlwarden never deletes or overwrites an edited file: "
                            f"move it out of {folder} (mlwarden then makes that file afresh) or choose a new --out")
    owned = {c["path"] for c in records}   # replaced (resume) or deleted first (a new run): the run's to write
    for rel in writes:
        p = folder / rel
        blocking = [q for q in p.parents if q != folder and inside(folder, q) and os.path.lexists(q) and not q.is_dir()]
        if os.path.lexists(p) and rel not in owned:
            blocking.insert(0, p)
        if blocking:
            role = ("is an input of this run (model, data, config or baseline)" if protected.holds(blocking[0]) else
                    "is in the way and mlwarden did not write it")
            raise UserError(f"{blocking[0]}: {role}; mlwarden never overwrites it: move it away or choose a new --out")
    if resume:
        return {**state, "created": records}
    remove_created(folder, records)
    return {}


def remove_created(folder: Path, created: list[dict[str, str]]) -> None:
    """Delete the files of proven records that still hold what the run wrote (and folders left empty)."""
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


def open_run(folder: Path, what: str) -> "RunDir":
    """The proven run directory `folder` (to write more into it), or a one-line error."""
    folder = Path(folder)
    state = read_state(folder) if folder.is_dir() else None
    if state is None:
        raise UserError(f"{what} {folder}: is not an mlwarden run directory (no run.json); mlwarden writes only "
                        "into its own run directories")
    if not _proven(_load_key(folder), state):
        raise _unproven(what, folder, state)
    return RunDir(folder, state)


def check_replace(folder: Path, path: Path) -> None:
    """The rule of `RunDir.check_write` for writers that hold no RunDir (a threat's evidence, a defence's
    files), read from the folder's run.json: `path` may be written when it does not exist yet, or is a file
    the run proves it wrote and that still holds what it wrote."""
    if not os.path.lexists(path) and inside(folder, path):
        return
    open_run(folder, "run directory").check_write(path)


def guard(folder: Path):
    """`check_replace` for one run directory, as a picklable callable."""
    return functools.partial(check_replace, Path(folder))


class RunDir:
    """Writes run.json after every step, listing every file the run created (relative path, content hash
    and the proof that this run directory's key made the record). Every write goes through `place`, the
    folder the run claimed (core/files.py `Folder`)."""

    def __init__(self, folder: Path, state: dict[str, Any]):
        self.folder = Path(folder)
        self.place = Folder(self.folder)     # opened without following a link: its identity from now on
        key = _load_key(self.folder)
        if key is None:
            raise UserError(f"{self.folder}: its key in {keys_dir()} is gone; choose a new or empty --out")
        self.key = key
        self.state = {**{k: v for k, v in state.items() if k not in ("proof", "created")}, "kind": KIND}
        self.created: list[dict[str, str]] = _verified(key, state.get("created"))

    def _rel(self, path: Path | str) -> str:
        base = self.folder.as_posix().rstrip("/") + "/"
        rel = Path(path).as_posix()
        if rel.startswith(base):
            return rel[len(base):]
        if Path(path).is_absolute():
            return self.place.rel(path)
        return rel

    def record(self, rel: str, digest: str, *, save: bool = True) -> None:
        """Record a file the run wrote (through `place`) with the SHA-256 of the bytes it wrote."""
        record = {"path": rel, "sha256": digest, "proof": _mac(self.key, "file", rel, digest)}
        for c in self.created:
            if c["path"] == rel:
                c.update(record)
                break
        else:
            self.created.append(record)
        if save:
            self.save()

    def add(self, *paths: Path | str) -> None:
        """Record files a library wrote to a path of the run directory (a saved model): hashed as found, and
        only a regular file with one link."""
        for p in paths:
            rel = self._rel(p)
            full = self.folder / rel
            try:
                st = os.lstat(full)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or not inside(self.folder, full):
                continue
            self.record(rel, sha256(full), save=False)
        self.save()

    def check_write(self, path: Path | str) -> None:
        """Raise unless `path` may be written: inside the folder, and new or a file this run proves it wrote
        and that still holds what it wrote."""
        p = self.folder / self._rel(path)
        if not inside(self.folder, p):
            raise UserError(f"{p}: outside the run directory {self.folder}; mlwarden writes only inside it")
        if not os.path.lexists(p):
            return
        digest = {c["path"]: c["sha256"] for c in self.created}.get(self._rel(path))
        why = "mlwarden did not write it" if digest is None else _changed(p, digest)
        if why:
            raise UserError(f"{p}: {why}; mlwarden never overwrites it: move it away or choose a new --out")

    def write(self, rel: str | Path, data: str | bytes) -> Path:
        """Write a file of the run (after `check_write`) through the one write primitive, and record it."""
        rel = self._rel(rel)
        self.check_write(self.folder / rel)
        self.record(rel, self.place.write(rel, data))
        return self.folder / rel

    def dest(self, rel: str | Path) -> Dest:
        """A file of the run to be written later by `write_file(dest, data)` (a plot): checked now, written and
        recorded by `write`."""
        rel = self._rel(rel)
        self.check_write(self.folder / rel)
        return Dest(self.folder / rel, lambda _path, data: self.write(rel, data) and self.created_sha(rel))

    def created_sha(self, rel: str) -> str:
        return next(c["sha256"] for c in self.created if c["path"] == rel)

    @property
    def created_paths(self) -> set[str]:
        return {c["path"] for c in self.created}

    def save(self) -> None:
        self.place.write("run.json", json.dumps({**self.state, "layout": LAYOUT, "proof": _mac(self.key, "folder"),
                                                 "created": self.created}, indent=2, default=str))
