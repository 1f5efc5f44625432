"""Unpickling under the trust list, without importing torch unless the file is a torch file: the loader's
restricted unpicklers (plain pickle, joblib, skops) and the load-and-check the scan runs on every pickle and
skops file that passed it (io/validate.py checks what was built)."""
from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

from ..core.errors import UserError
from .guard import guarded_load
from .scan import FileScan
from .scan.pickles import normalize
from .scan.trust import classify, resolve, torch_weights_types
from .validate import validate_estimator


# Trusted functions that call an argument of the pickle's choosing: fine inside torch's weights_only
# unpickler (which checks that argument), not in a plain pickle.
CALLS_ITS_ARGUMENTS = {"torch._tensor._rebuild_from_type_v2", "torch._utils._rebuild_wrapper_subclass"}
# numpy's random-state constructors call their second argument: allowed only with a generator's name, a
# BitGenerator (class or instance) or numpy's own constructor as arguments, as numpy pickles them.
NUMPY_RANDOM_CTORS = {"__generator_ctor", "__bit_generator_ctor", "__randomstate_ctor"}


class _RestrictedUnpickler(pickle._Unpickler):  # the Python unpickler: its opcodes can be checked one by one
    """Imports only what the trust list allows (or the user named): the same rule as the scan. And it calls,
    constructs and rebuilds only those objects themselves, never an instance that a pickle made (a trusted
    class whose instances do work when called would otherwise be a gadget)."""

    def __init__(self, f, trust: frozenset[str], user_trust: frozenset[str] = frozenset()):
        super().__init__(f)
        self._trust, self._user = trust, user_trust
        self._found: set[int] = set()

    def find_class(self, module: str, name: str):
        full = normalize(module, name)
        if full in CALLS_ITS_ARGUMENTS and full not in self._user:
            raise pickle.UnpicklingError(f"{full} calls what the pickle gives it; only torch's loader may use it")
        if classify(full, "type", self._trust) not in ("trusted", "trusted-by-user"):
            raise pickle.UnpicklingError(f"{full} is not trusted")
        obj = resolve(full)
        self._found.add(id(obj))
        return obj

    def _check(self, obj) -> None:
        if id(obj) not in self._found:
            raise pickle.UnpicklingError(f"the pickle calls a {type(obj).__name__} object it built, not a trusted type")

    def load_reduce(self):
        fn, args = self.stack[-2], self.stack[-1]
        self._check(fn)
        if getattr(fn, "__name__", "") == "newObj" and not (   # cls.__new__(cls) for a trusted class only
                isinstance(args, tuple) and len(args) == 1 and isinstance(args[0], type) and id(args[0]) in self._found):
            raise pickle.UnpicklingError("newObj may only construct a trusted class")
        if getattr(fn, "__module__", "") == "numpy.random._pickle" and getattr(fn, "__name__", "") in NUMPY_RANDOM_CTORS:
            _check_random_args(args)
        if fn in (bytes, bytearray) and isinstance(args, tuple) and args and not isinstance(args[0], (str, bytes)):
            raise pickle.UnpicklingError("bytes built from a size, not from data (a pickle never spells bytes so)")
        super().load_reduce()

    def load_newobj(self):
        self._check(self.stack[-2])
        super().load_newobj()

    def load_newobj_ex(self):
        self._check(self.stack[-3])
        super().load_newobj_ex()

    def load_build(self):
        if isinstance(self.stack[-2], type):   # BUILD on a class would set attributes for the whole process
            raise pickle.UnpicklingError("the pickle sets state on a class, not on an object")
        super().load_build()

    def load_obj(self):
        if not self.stack:   # the stack since the mark: the class, then its arguments
            raise pickle.UnpicklingError("OBJ without a class")
        self._check(self.stack[0])
        super().load_obj()

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.REDUCE[0]] = load_reduce
    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex
    dispatch[pickle.OBJ[0]] = load_obj
    dispatch[pickle.BUILD[0]] = load_build


def _check_random_args(args) -> None:
    from numpy.random import _pickle as nprp
    from numpy.random.bit_generator import BitGenerator
    ctor = getattr(nprp, "__bit_generator_ctor")
    for a in args if isinstance(args, tuple) else (args,):
        if not (isinstance(a, (str, BitGenerator)) or a is ctor or (isinstance(a, type) and issubclass(a, BitGenerator))):
            raise pickle.UnpicklingError("a numpy random-state constructor given something other than a generator")


def _load_pickle(path: Path, scan: FileScan):
    """Unpickle with the trust list enforced: torch archives through torch's own restricted unpickler
    (weights_only) widened by exactly the scanned, trusted names; plain pickles through ours."""
    trusted = {r.name for r in scan.references if r.verdict in ("trusted", "trusted-by-user")}
    warnings.warn(f"unpickling {path}: only these names may load: {', '.join(sorted(trusted)) or 'none'}",
                  stacklevel=3)
    try:
        if scan.format in ("torch", "pickle") and _is_torch_file(path, scan):
            import torch
            extra = [resolve(n) for n in sorted(trusted - torch_weights_types())]
            with torch.serialization.safe_globals(extra):
                return torch.load(path, map_location="cpu", weights_only=True)
        with open(path, "rb") as f:
            user = frozenset(r.name for r in scan.references if r.verdict == "trusted-by-user")
            if JOBLIB_ARRAY in trusted:
                return _joblib_unpickler(f, path, frozenset(trusted), user).load()
            return _RestrictedUnpickler(f, frozenset(trusted), user).load()
    except Exception as e:  # noqa: BLE001 - whatever a hostile or broken pickle raises is a user-facing error
        msg = str(e).splitlines()[0][:200] if str(e).strip() else ""
        raise UserError(f"{path}: cannot unpickle ({type(e).__name__}: {msg})") from None


JOBLIB_ARRAY = "joblib.numpy_pickle.NumpyArrayWrapper"


def _joblib_unpickler(f, path: Path, trust: frozenset[str], user: frozenset[str] = frozenset(),
                      record: list[str] | None = None):
    """joblib's unpickler (numpy arrays stored raw inside the pickle stream) under the same rule as ours: only
    trusted names, calls only of what find_class returned, no state set on a class. An array is read only as
    a plain numeric ndarray whose bytes fit in the file; arrays of Python objects (a nested pickle) and
    joblib's legacy wrapper (which reads a file the pickle names) are refused. `record` collects every name
    asked for, in order (the scan's view of a joblib file)."""
    import numpy as np
    from joblib.numpy_pickle import NumpyArrayWrapper, NumpyUnpickler

    size = os.fstat(f.fileno()).st_size

    class _Joblib(_RestrictedUnpickler, NumpyUnpickler):
        dispatch = dict(_RestrictedUnpickler.dispatch)

        def __init__(self):
            NumpyUnpickler.__init__(self, str(path), f, ensure_native_byte_order=True)
            self._trust, self._user, self._found = trust, user, set()

        def find_class(self, module, name):
            if record is not None:
                record.append(normalize(module, name))
            return super().find_class(module, name)

        def load_build(self):
            _RestrictedUnpickler.load_build(self)
            w = self.stack[-1]
            if not isinstance(w, NumpyArrayWrapper):
                return
            dtype, shape = getattr(w, "dtype", None), getattr(w, "shape", None)
            if not isinstance(dtype, np.dtype) or dtype.hasobject or w.subclass is not np.ndarray:
                raise pickle.UnpicklingError("a joblib array that is not a plain numeric ndarray")
            if not (isinstance(shape, tuple) and all(isinstance(d, int) and d >= 0 for d in shape)):
                raise pickle.UnpicklingError("a joblib array with a malformed shape")
            if int(np.prod(shape, dtype=object)) * dtype.itemsize > size:
                raise pickle.UnpicklingError("a joblib array larger than its file")
            self.stack[-1] = w.read(self, self.ensure_native_byte_order)

        dispatch[pickle.BUILD[0]] = load_build

    return _Joblib()


def joblib_references(path: Path, trust: frozenset[str]) -> tuple[list[str], list[str]]:
    """The names a joblib file with arrays uses and why it cannot load, read by loading it with trusted names
    only (the static walk cannot step over the raw array bytes inside the stream)."""
    names: list[str] = []
    try:
        with guarded_load(str(path), trust), open(path, "rb") as f:
            _joblib_unpickler(f, path, trust, trust, names).load()
    except (pickle.UnpicklingError, UserError) as e:
        return names, [f"joblib: {str(e).splitlines()[0][:160]}"]
    except Exception as e:  # noqa: BLE001 - a broken stream is a problem, not a crash
        return names, [f"joblib: unreadable ({type(e).__name__})"]
    return names, []


def _is_torch_file(path: Path, scan: FileScan) -> bool:
    return scan.format == "torch" or any(r.name.startswith("torch.") for r in scan.references)


def _load_skops(path: Path, scan: FileScan):
    import skops.io as sio
    trusted = sorted({r.name for r in scan.references if r.verdict in ("trusted", "trusted-by-user")})
    try:
        return sio.load(str(path), trusted=trusted)
    except Exception as e:  # noqa: BLE001 - any failure here means a file we cannot read
        raise UserError(f"{path}: not a readable skops file ({type(e).__name__}: {str(e)[:160]})") from None


def structure_problems(path: Path, scan: FileScan) -> list[str]:
    """For a pickle or skops file that passed the scan: load it (trusted names only, under the load guard)
    and check the arrays compiled code will index (io/validate.py). The scan cannot see these statically."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with guarded_load(str(path), frozenset(r.name for r in scan.references if r.verdict == "trusted-by-user")):
                obj = _load_skops(path, scan) if scan.format == "skops" else _load_pickle(path, scan)
                validate_estimator(obj, path.name)
    except UserError as e:
        return [str(e).removeprefix(f"{path.name}: ").removeprefix(f"{path}: ")]
    return []
