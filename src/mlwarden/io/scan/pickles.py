"""Static reading of pickle streams: which globals a pickle imports and whether it calls them, without
unpickling anything (the opcodes are walked with `pickletools`). Loading a pickle is the classic way a
model file runs code (MITRE ATLAS AML.T0011.000); a scan that only looks for known-bad names is
bypassed by any gadget it does not list, so every import is classified against the trust list."""
from __future__ import annotations

import _compat_pickle
import io
import pickle
import pickletools
import re
from dataclasses import dataclass, field

_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING",
               "SHORT_BINSTRING"}
_GET_OPS = {"GET", "BINGET", "LONG_BINGET"}
_PUT_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}
_CALL_OPS = {"REDUCE", "NEWOBJ", "NEWOBJ_EX", "OBJ", "INST", "BUILD"}


@dataclass
class PickleScan:
    imports: list[str] = field(default_factory=list)   # dotted names, in order of first appearance
    calls: int = 0                                      # opcodes that call or construct
    problems: list[str] = field(default_factory=list)   # why the stream could not be read completely
    pickles: int = 0                                    # pickle streams read (a file may hold several)


def scan_pickle_bytes(data: bytes, max_streams: int = 16) -> PickleScan:
    return scan_pickle_stream(io.BytesIO(data), len(data), max_streams)


def scan_pickle_stream(buf, size: int, max_streams: int = 16) -> PickleScan:
    """Walk every pickle stream in `data`, one after another: a legacy torch file holds five (magic number,
    protocol, system info, the object, storage keys) before its raw tensor bytes, and an unpickler reads
    each. The walk ends at the end of the data, or at the first bytes that do not parse once at least one
    stream has (raw tensor data); a stream that does not parse at the start is a problem."""
    out = PickleScan()
    while out.pickles < max_streams and buf.tell() < size:
        start = buf.tell()
        try:
            _walk(buf, out)
        except _PARSE_ERRORS as e:
            if out.pickles == 0:
                out.problems.append(f"unreadable pickle at byte {start}: {type(e).__name__}: {str(e)[:120]}")
            break
        out.pickles += 1
    if out.pickles == 0 and not out.problems:
        out.problems.append("empty pickle stream")
    return out


def scan_pickle_prefix(buf, size: int, max_streams: int = 16) -> PickleScan:
    """Read bytes of unknown meaning (an archive member no reader claims, raw tensor data) as an unpickler
    would if something handed them to it (`buf` is read as a stream:
    a large tensor is not read past its first bytes): every import the opcodes reach before the first byte that does not
    parse counts, of any protocol, whether or not a STOP follows (an unpickler runs each opcode as it reads
    it, so a payload followed by garbage still runs). Names that are no Python identifiers cannot be
    imported and are ignored, so raw numbers are not reported."""
    out = PickleScan()
    while out.pickles < max_streams and buf.tell() < size:
        try:
            _walk(buf, out, lenient=True)
        except _PARSE_ERRORS:
            break
        out.pickles += 1
    return out


def parses_as_pickle(data: bytes) -> bool:
    """True when `data` starts with a complete pickle stream of any protocol (0 and 1 included)."""
    if not data:
        return False
    try:
        for op, _, _ in pickletools.genops(io.BytesIO(data)):
            if op.name == "STOP":
                return True
    except Exception:  # noqa: BLE001 - anything that does not parse is not a pickle
        return False
    return False


_PARSE_ERRORS = (ValueError, EOFError, pickle.UnpicklingError, IndexError, KeyError, UnicodeDecodeError, RecursionError)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def _walk(buf: io.BytesIO, out: PickleScan, lenient: bool = False) -> None:
    memo: dict[int, object] = {}
    recent: list[object] = []   # what the last opcodes pushed: a string, or None for anything else
    for op, arg, _pos in pickletools.genops(buf):
        name = op.name
        if name in _STRING_OPS:
            recent.append(arg if isinstance(arg, str) else arg.decode("latin-1") if isinstance(arg, bytes) else None)
        elif name in _GET_OPS:
            recent.append(memo.get(arg))
        elif name in _PUT_OPS:
            memo[arg] = recent[-1] if recent else None
        elif name == "MEMOIZE":
            memo[len(memo)] = recent[-1] if recent else None
        elif name in ("GLOBAL", "INST"):
            module, _, attr = str(arg).partition(" ")
            if not lenient or (_IDENTIFIER.fullmatch(module) and _IDENTIFIER.fullmatch(attr)):
                _add(out, f"{module}.{attr}")
            recent.append(None)
        elif name == "STACK_GLOBAL":
            if len(recent) >= 2 and isinstance(recent[-1], str) and isinstance(recent[-2], str):
                if not lenient or (_IDENTIFIER.fullmatch(recent[-2]) and _IDENTIFIER.fullmatch(recent[-1])):
                    _add(out, f"{recent[-2]}.{recent[-1]}")
            elif len(recent) >= 2 or not lenient:   # with fewer than two values an unpickler fails here
                out.problems.append("STACK_GLOBAL with a name computed at load time (cannot be checked)")
            recent.append(None)
        else:
            recent.append(None)
        if name in _CALL_OPS:
            out.calls += 1
        if name == "STOP":
            return
    raise EOFError("pickle ended without STOP")


def normalize(module: str, attr: str) -> str:
    """The name `pickle.Unpickler.find_class` would import (protocol < 3 spells Python 2 names)."""
    if (module, attr) in _compat_pickle.NAME_MAPPING:
        module, attr = _compat_pickle.NAME_MAPPING[(module, attr)]
    module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    return f"{module}.{attr}"


def _add(out: PickleScan, name: str) -> None:
    name = normalize(*name.rsplit(".", 1)) if "." in name else name
    if name not in out.imports:
        out.imports.append(name)


def looks_like_pickle(head: bytes) -> bool:
    """Protocol 2+ pickles start with PROTO; older ones are rare in model files and read as data."""
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5
