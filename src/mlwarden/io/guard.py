"""A second line behind the scan: while mlwarden loads a model file, a Python audit hook (PEP 578) refuses
what no loader of a model needs. Every unpickler reports each name it imports (`pickle.find_class`, the C
and the Python implementation alike), so a pickle that some library unpickles behind the scan's back still
imports only trusted names; starting a process, loading a native library, opening a socket, deleting or
renaming a file, and opening a file for writing are refused outright, except inside an import (numpy,
scipy and scikit-learn load native libraries the first time a trusted name brings in their module). The hook is installed once per
process and does nothing outside a `guarded_load` block (a context variable says which load is running).

What it cannot see: code that never returns to Python (a TorchScript or `.pt2` operator run at predict
time, a native library's own calls), which is why the scan judges those programs before anything loads.
"""
from __future__ import annotations

import contextvars
import os
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field

from ..core.errors import UserError

_REFUSED_EVENTS = ("os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "pty.spawn",
                   "subprocess.Popen", "ctypes.dlopen", "ctypes.cdata", "socket.connect", "socket.bind",
                   "socket.sendto", "os.remove", "os.rmdir", "os.rename", "shutil.rmtree", "shutil.move",
                   "os.truncate", "os.chmod", "os.chown", "os.link", "os.symlink", "webbrowser.open",
                   "urllib.Request", "code.__new__", "sys.settrace", "sys.setprofile")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


@dataclass
class _Load:
    path: str
    trust: frozenset[str]
    refused: list[str] = field(default_factory=list)


_ACTIVE: contextvars.ContextVar[_Load | None] = contextvars.ContextVar("mlwarden_guarded_load", default=None)
_installed = False
_lock = threading.Lock()


def _writes(args) -> bool:
    mode, flags = (args[1] if len(args) > 1 else None), (args[2] if len(args) > 2 else 0)
    if isinstance(mode, str) and any(c in mode for c in "wax+"):
        return True
    return isinstance(flags, int) and bool(flags & _WRITE_FLAGS)


def _hook(event: str, args) -> None:
    load = _ACTIVE.get()
    if load is None:
        return
    why = None
    if event == "pickle.find_class":
        from .scan.pickles import normalize
        from .scan.trust import classify
        name = normalize(str(args[0]), str(args[1]))
        if classify(name, "type", load.trust) not in ("trusted", "trusted-by-user"):
            why = f"unpickle {name}"
    elif (event == "open" and _writes(args) or event.startswith(_REFUSED_EVENTS)) and _importing():
        return   # a module the loader imports for the first time (numpy, scipy and sklearn load libraries)
    elif event == "open" and _writes(args):
        target = os.fsdecode(args[0]) if isinstance(args[0], (str, bytes, os.PathLike)) else repr(args[0])
        if target.endswith(".pyc.tmp") or target.endswith(".pyc") or ".pyc." in target:
            # Python caching the bytecode of a module the loader imports lazily: refused (a written .pyc
            # would be code for later), which the import system ignores, and no fault of the file's
            raise PermissionError("mlwarden: no bytecode is cached while a model file loads")
        why = f"open {target} for writing"
    elif event.startswith(_REFUSED_EVENTS):
        why = event
    if why is not None:
        load.refused.append(why)
        raise PermissionError(f"mlwarden: loading a model file may not {why}")


def _importing() -> bool:
    """True when a module is being imported: imports during a load come from trusted names or torch itself."""
    frame = sys._getframe(2)
    for _ in range(200):
        if frame is None:
            return False
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _install() -> None:
    global _installed
    with _lock:
        if not _installed:
            sys.addaudithook(_hook)
            _installed = True


@contextmanager
def guarded_load(path: str, trust: frozenset[str] = frozenset()):
    """Load a model file inside this block. Anything refused makes the load fail with a one-line error,
    even when the file's code caught the exception it got."""
    _install()
    load = _Load(str(path), trust)
    token = _ACTIVE.set(load)
    try:
        yield load
    except UserError:
        if load.refused:
            raise _refusal(load) from None
        raise
    except Exception:
        if load.refused:
            raise _refusal(load) from None
        raise
    finally:
        _ACTIVE.reset(token)
    if load.refused:
        raise _refusal(load)


def _refusal(load: _Load) -> UserError:
    return UserError(f"{load.path}: loading it tried to {load.refused[0]}, which no model needs; refused, and "
                     "nothing it loaded is used (details: mlwarden scan " + load.path + ")")


@contextmanager
def own_step():
    """A step of mlwarden's own inside a load, not the file's: the hook lets it through. Only for fixed
    commands that no byte of the file chooses (io/catboost_files.py starts its converter, a constant Python
    program in a child process under resource limits, to keep CatBoost's native reader out of this process)."""
    token = _ACTIVE.set(None)
    try:
        yield
    finally:
        _ACTIVE.reset(token)
