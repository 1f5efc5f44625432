"""Paths the user names, checked before anything opens them.

A named pipe given where a file goes makes `open` wait for a writer (or a reader) forever, and a device
can be read forever; a folder given as an output file fails late, half-way through a run. Every path
option goes through `refuse_special` (a `stat`, which never opens the path) and every reader of a user's
file through `read_regular` (opened without blocking, its type checked on what was opened, its size
capped), so each of these is a one-line error naming the option. Parsed JSON and TOML from a user also
pass `check_nesting`: a document nested thousands of levels deep is not a config or a report, and would
exhaust Python's recursion limit in whatever walks it next."""
from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

MAX_NESTING = 64            # levels of lists and tables; what mlwarden writes stays under 10
MAX_READ = 256 << 20        # bytes of a config, report, registry or key file


def _kind(mode: int) -> str:
    return ("a folder" if stat.S_ISDIR(mode) else "a named pipe" if stat.S_ISFIFO(mode) else
            "a socket" if stat.S_ISSOCK(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else
            "not a regular file")


def refuse_special(path: str | os.PathLike, what: str, *, folder: bool = False) -> None:
    """A one-line UserError when `path` exists and is not a regular file (nor, with `folder`, a folder);
    nothing when it is one or does not exist (its reader says what is missing). Never opens the path."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as e:
        raise UserError(f"{what} {path}: cannot be read ({e.strerror})") from None
    if stat.S_ISREG(mode) or (folder and stat.S_ISDIR(mode)):
        return
    raise UserError(f"{what} {path}: is {_kind(mode)}, not a regular file"
                    + ("" if stat.S_ISDIR(mode) else " (mlwarden never opens pipes or devices: it would wait forever)"))


def refuse_output(path: str | os.PathLike, what: str) -> Path:
    """An output file's path: a regular file (replaced) or a new name in an existing folder; a folder, pipe or
    device at that name, or a parent that is not a folder, is a one-line UserError before any work."""
    p = Path(path)
    refuse_special(p, what)
    parent = p.parent if str(p.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise UserError(f"{what} {path}: {parent} is not a folder")
    return p


def refuse_input_output(path: str | os.PathLike, what: str, inputs, *, folders: bool = False) -> None:
    """A one-line UserError when the output file `path` is one of the command's `inputs` (the same file: device
    and inode; for a folder, its report.json), or with `folders` (scan reads every file of a folder) an
    existing file inside an input folder: writing it would replace what the command reads."""
    for i in inputs:
        if not i or str(i).startswith(("http://", "https://")):
            continue
        candidates = [Path(i)] + ([Path(i) / "report.json"] if os.path.isdir(i) else [])
        if any(same_file(path, c) for c in candidates) or (
                folders and os.path.isdir(i) and os.path.lexists(path)
                and os.path.commonpath([os.path.realpath(i), os.path.realpath(path)]) == os.path.realpath(i)):
            raise UserError(f"{what} {path}: is an input of this command ({i}); mlwarden never replaces what it "
                            "reads: name another output file")


def open_regular(path: str | os.PathLike, what: str = "") -> int:
    """A read-only descriptor of `path`, which must be a regular file: opened without blocking (a pipe with no
    writer returns at once) and its type checked on what was opened, not on a name that can change."""
    label = f"{what} {path}" if what else str(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise UserError(f"{label}: not found") from None
    except OSError as e:
        raise UserError(f"{label}: cannot be read ({e.strerror})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise UserError(f"{label}: is {_kind(mode)}, not a regular file; mlwarden reads and writes only regular files")
    return fd


def read_regular(path: str | os.PathLike, what: str = "", limit: int = MAX_READ) -> bytes:
    """The bytes of a regular file (`open_regular`), at most `limit` bytes long."""
    label = f"{what} {path}" if what else str(path)
    with os.fdopen(open_regular(path, what), "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise UserError(f"{label}: {size} bytes, more than the {limit >> 20} MiB it may hold")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise UserError(f"{label}: more than the {limit >> 20} MiB it may hold")
    return data


def read_text(path: str | os.PathLike, what: str, limit: int = MAX_READ) -> str:
    """`read_regular` decoded as UTF-8 (a byte-order mark is dropped)."""
    try:
        return read_regular(path, what, limit).decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{what} {path}: not UTF-8 text (byte {e.start})") from None


def nesting(obj, stop: int = MAX_NESTING + 1) -> int:
    """How deeply lists and dicts nest in `obj` (a scalar: 0), counted without recursion up to `stop`."""
    deepest, todo = 0, [(obj, 1)]
    while todo:
        o, d = todo.pop()
        if isinstance(o, dict):
            o = list(o.values())
        elif not isinstance(o, (list, tuple)):
            continue
        deepest = max(deepest, d)
        if deepest >= stop:
            return deepest
        todo.extend((v, d + 1) for v in o if isinstance(v, (dict, list, tuple)))
    return deepest


def check_nesting(obj, what: str, limit: int = MAX_NESTING) -> None:
    """A one-line UserError when `obj` nests more than `limit` levels of lists and tables."""
    if nesting(obj, limit + 1) > limit:
        raise UserError(f"{what}: nested more than {limit} levels deep (not something mlwarden reads)")


# -- the one way mlwarden writes a file -------------------------------------------------------------------
# Every file a run creates (and every output file a command names) is written here: the bytes, made in
# memory, go to a new temporary file in the target folder (O_CREAT|O_EXCL|O_NOFOLLOW: never an existing name,
# never through a link), which is then renamed over the name. A rename replaces a link or a hard link planted
# at the name instead of writing through it. Inside a run directory every path component is opened relative
# to the run directory's own descriptor, itself opened without following a link and checked to be the very
# folder the run claimed (device and inode): a run folder swapped for a link or another folder mid-run stops
# the run instead of redirecting its writes.

_DIR = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)


def _subdir(fd: int, name: str, where: Path) -> int:
    """The descriptor of folder `name` in folder `fd` (made when missing); a link or a file there is an error."""
    for _ in range(2):
        try:
            return os.open(name, _DIR, dir_fd=fd)
        except FileNotFoundError:
            try:
                os.mkdir(name, 0o777, dir_fd=fd)
            except FileExistsError:
                pass
        except OSError as e:
            raise UserError(f"{where / name}: is a link or not a folder ({e.strerror}); mlwarden never writes "
                            "through a link") from None
    raise UserError(f"{where / name}: cannot be made a folder")


def _write_at(fd: int, name: str, data: bytes, where: Path) -> None:
    """Write `data` as `name` in folder `fd`: a new temporary file there, then a rename over the name."""
    try:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
        raise UserError(f"{where / name}: has {st.st_nlink} hard links (another name shares its content); mlwarden "
                        "never replaces such a file: move it away or choose a new --out")
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise UserError(f"{where / name}: is a folder; mlwarden writes a file there")
    for _ in range(100):
        tmp = f".{name[:64]}.{os.urandom(6).hex()}.tmp"
        try:
            tfd = os.open(tmp, _NEW, 0o666, dir_fd=fd)
            break
        except FileExistsError:
            continue
    else:
        raise UserError(f"{where}: cannot create a temporary file")
    try:
        with os.fdopen(tfd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=fd)
        except OSError:
            pass
        raise


def _bytes(data: bytes | str) -> bytes:
    return data.encode("utf-8") if isinstance(data, str) else bytes(data)


def write_file(path: str | os.PathLike, data: bytes | str) -> str:
    """Write `data` (str: UTF-8) as the file `path`, whole or not at all, never through a link at that name
    (nor a hard link: refused); its folder is made when missing. Returns the SHA-256 of what was written.
    A `Dest` (a file of a run directory) is written through its run directory instead."""
    if isinstance(path, Dest):
        return path.put(data)
    data = _bytes(data)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(p.parent if str(p.parent) else ".", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        _write_at(fd, p.name, data, p.parent)
    finally:
        os.close(fd)
    return hashlib.sha256(data).hexdigest()


class Folder:
    """A run directory as the run claimed it: its path and the identity (device, inode) of the folder there.
    Picklable, so a worker process writes evidence the same way. `write` works relative to a descriptor of
    the folder, checked on every write, so a swapped path cannot redirect what the run writes."""

    def __init__(self, path: str | os.PathLike, ident: tuple[int, int] | None = None):
        self.path = Path(path).absolute()
        if ident is None:
            fd = self.open(check=False)
            st = os.fstat(fd)
            os.close(fd)
            ident = (st.st_dev, st.st_ino)
        self.ident = ident

    def open(self, check: bool = True) -> int:
        """A descriptor of the run directory; a one-line UserError when the path no longer leads to it."""
        swapped = (f"{self.path}: the run directory was moved or replaced (by a link or another folder) while the "
                   "run wrote to it; mlwarden stopped and wrote nothing elsewhere")
        try:
            fd = os.open(self.path, _DIR)
        except OSError as e:
            if not check:
                raise UserError(f"{self.path}: cannot open the run directory ({e.strerror}); it must be a folder, "
                                "not a link") from None
            raise UserError(swapped) from None
        st = os.fstat(fd)
        if check and (st.st_dev, st.st_ino) != self.ident:
            os.close(fd)
            raise UserError(swapped)
        return fd

    def rel(self, path: str | os.PathLike) -> str:
        """`path` relative to the run directory (a relative path is taken as one already)."""
        p = Path(os.fspath(path))
        if p.is_absolute():
            try:
                p = p.relative_to(self.path)
            except ValueError:
                raise UserError(f"{path}: outside the run directory {self.path}; mlwarden writes only inside it") \
                    from None
        rel = p.as_posix()
        if not rel or rel == "." or any(part in ("", ".", "..") for part in rel.split("/")):
            raise UserError(f"{path}: not a file inside the run directory {self.path}")
        return rel

    def write(self, rel: str, data: bytes | str) -> str:
        """Write the file `rel` (relative path) of the run directory; returns the SHA-256 of what was written."""
        rel = self.rel(rel)
        data = _bytes(data)
        *dirs, name = rel.split("/")
        fd = self.open()
        try:
            where = self.path
            for d in dirs:
                sub = _subdir(fd, d, where)
                os.close(fd)
                fd, where = sub, where / d
            _write_at(fd, name, data, where)
        finally:
            os.close(fd)
        return hashlib.sha256(data).hexdigest()

    def __reduce__(self):
        return (Folder, (str(self.path), self.ident))


class Dest(os.PathLike):
    """A file a run writes: its path (for messages and links) and `put(data)`, which writes it through the run's
    one write primitive and records what was written. `write_file(dest, data)` calls `put`."""

    def __init__(self, path: Path, put):
        self.path = Path(path)
        self._put = put

    def put(self, data: bytes | str) -> str:
        return self._put(self.path, _bytes(data))

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    def relative_to(self, other) -> Path:
        return self.path.relative_to(other)

    def __repr__(self) -> str:
        return f"Dest({str(self.path)!r})"


def png(fig, **kw) -> bytes:
    """A matplotlib figure as PNG bytes (written by `write_file`, never by savefig to a path)."""
    import io
    buf = io.BytesIO()
    fig.savefig(buf, format="png", **kw)
    return buf.getvalue()


def torch_bytes(obj) -> bytes:
    """`torch.save(obj)` as bytes (written by `write_file`, never by torch.save to a path)."""
    import io

    import torch
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when both paths exist and are one file (same device and inode)."""
    try:
        sa, sb = os.stat(a), os.stat(b)
    except (OSError, ValueError):
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


@dataclass(frozen=True)
class ModelFiles:
    """A trained model as the bytes of the files that hold it, made in memory for a run directory's checked
    write: `path` (relative, like every key of `files`) is what `--model` takes, a file or a folder."""
    path: str
    format: str                  # the --format name that loads it: skops, xgboost, lightgbm, catboost, hf
    files: dict[str, bytes]
