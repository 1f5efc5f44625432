"""Paths the user names, checked before anything opens them.

A named pipe given where a file goes makes `open` wait for a writer (or a reader) forever, and a device
can be read forever; a folder given as an output file fails late, half-way through a run. Every path
option goes through `refuse_special` (a `stat`, which never opens the path) and every reader of a user's
file through `read_regular` (opened without blocking, its type checked on what was opened, its size
capped), so each of these is a one-line error naming the option. Parsed JSON and TOML from a user also
pass `check_nesting`: a document nested thousands of levels deep is not a config or a report, and would
exhaust Python's recursion limit in whatever walks it next."""
from __future__ import annotations

import os
import stat
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


def read_regular(path: str | os.PathLike, what: str, limit: int = MAX_READ) -> bytes:
    """The bytes of a regular file, opened without blocking (a pipe swapped in after a check is still
    refused, not waited on) and at most `limit` bytes long."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise UserError(f"{what} {path}: not found") from None
    except OSError as e:
        raise UserError(f"{what} {path}: cannot be read ({e.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise UserError(f"{what} {path}: is {_kind(st.st_mode)}, not a regular file")
        if st.st_size > limit:
            raise UserError(f"{what} {path}: {st.st_size} bytes, more than the {limit >> 20} MiB it may hold")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise UserError(f"{what} {path}: more than the {limit >> 20} MiB it may hold")
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
