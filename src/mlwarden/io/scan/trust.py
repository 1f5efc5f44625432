"""What a model file may reference on load: an explicit list of types, never functions.

A reference is a dotted name (``module.qualname``) that loading would import, construct or call. It is
*trusted* when it is a data type or an estimator type on the lists below, *dangerous* when it is a
known way to run code or touch the system, and *untrusted* otherwise. Only trusted references load
without the user naming them (``--trust NAME``). The lists are names, built without importing anything a
file names: a scan never imports a module it reads about.
"""
from __future__ import annotations

import functools
import importlib
import inspect

# Plain data types: constructing one runs no code of the file's choosing.
# (no `range` and no `deque`: `deque(range(10**18), 0)` is 115 bytes of trusted names that never finish)
BUILTIN_DATA = {f"builtins.{n}" for n in (
    "dict", "list", "tuple", "set", "frozenset", "bytearray", "bytes", "complex", "slice", "int", "float",
    "bool", "str", "object")}
STDLIB_DATA = {"collections.OrderedDict", "collections.defaultdict", "collections.Counter",
               "copyreg._reconstructor", "_codecs.encode", "datetime.datetime", "datetime.date",
               "datetime.timedelta", "fractions.Fraction", "decimal.Decimal"}
# Type references a file may pass as values (e.g. ``dtype=float``): types whose call only converts data.
TYPE_VALUES = {f"builtins.{n}" for n in ("int", "float", "bool", "complex", "str", "bytes", "object")}

NUMPY_DATA = {f"{core}.multiarray.{n}" for core in ("numpy.core", "numpy._core")
              for n in ("_reconstruct", "scalar")} | {
    f"{core}.numeric._frombuffer" for core in ("numpy.core", "numpy._core")} | {   # an array from its bytes
    "numpy.ndarray", "numpy.dtype", "numpy.ma.core.MaskedArray", "numpy.ma.MaskedArray", "numpy.ma.core._mareconstruct",
    "numpy.random._pickle.__randomstate_ctor", "numpy.random._pickle.__bit_generator_ctor",
    "numpy.random._pickle.__generator_ctor", "numpy.random.mtrand.RandomState",
    "numpy.random._generator.Generator", "numpy.random._mt19937.MT19937", "numpy.random._pcg64.PCG64",
    "numpy.random.bit_generator.SeedSequence", "joblib.numpy_pickle.NumpyArrayWrapper"}
# (joblib's NDArrayWrapper, from joblib before 0.10, reads its array from a file the pickle names: not trusted)
SCIPY_SPARSE = {f"scipy.sparse._{fmt}.{fmt}_{kind}" for fmt in ("csr", "csc", "coo", "lil", "dok", "bsr", "dia")
                for kind in ("matrix", "array")}
# scikit-learn types that estimators hold, besides the estimators themselves.
SKLEARN_INTERNAL_MODULES = (
    "sklearn.tree._tree", "sklearn._loss.loss", "sklearn._loss.link", "sklearn._loss._loss",
    "sklearn.neighbors._kd_tree", "sklearn.neighbors._ball_tree", "sklearn.metrics._dist_metrics",
    "sklearn.ensemble._hist_gradient_boosting.predictor", "sklearn.ensemble._hist_gradient_boosting.binning",
    "sklearn.neural_network._stochastic_optimizers", "sklearn.utils._bunch", "sklearn.model_selection._split",
    "sklearn.ensemble._gb", "sklearn.calibration", "sklearn.compose._column_transformer", "sklearn.linear_model._sgd_fast")
# Callable, but called only by `score()`, which no audit calls; GridSearchCV keeps one.
SKLEARN_CALLABLE_DATA = {"sklearn.metrics._scorer._PassthroughScorer"}

# Known ways to run code, reach the system or load more code; reported as dangerous.
DANGEROUS_MODULES = (
    "os", "posix", "nt", "subprocess", "sys", "runpy", "pty", "socket", "shutil", "importlib", "pickle",
    "_pickle", "marshal", "types", "code", "codeop", "ctypes", "webbrowser", "pydoc", "asyncio", "multiprocessing",
    "pip", "requests", "urllib", "http", "ftplib", "telnetlib", "smtplib", "bdb", "pdb", "timeit", "cProfile",
    "profile", "trace", "tempfile", "glob", "pathlib", "io", "_io", "zipimport", "numpy.testing", "torch.hub",
    "torch.serialization", "torch.utils.cpp_extension", "torch._dynamo", "torch.fx.experimental",
    "dill", "cloudpickle", "joblib.parallel", "functools", "operator", "_operator", "inspect", "threading",
    "signal", "platform", "ensurepip", "venv", "site", "distutils", "setuptools")
DANGEROUS_BUILTINS = {f"builtins.{n}" for n in (
    "exec", "eval", "compile", "__import__", "open", "getattr", "setattr", "delattr", "globals", "locals",
    "vars", "breakpoint", "input", "help", "memoryview", "type", "super", "classmethod", "staticmethod",
    "apply", "execfile", "reload", "file")}


@functools.lru_cache(maxsize=None)
def _sklearn_types() -> frozenset[str]:
    import sys
    names = set()
    try:
        from sklearn.utils import all_estimators
    except ImportError:
        return frozenset()
    # all_estimators walks every scikit-learn package; its array-API shims for torch, CuPy and Dask import
    # those libraries (torch alone costs seconds) and hold no estimator: skipped (an import that fails is
    # passed over by the walk)
    shims = [f"sklearn.externals.array_api_compat.{lib}" for lib in ("torch", "cupy", "dask")]
    blocked = [m for m in shims if m not in sys.modules]
    sys.modules.update(dict.fromkeys(blocked))
    try:
        estimators = all_estimators()
    finally:
        for m in blocked:
            sys.modules.pop(m, None)
    for _, cls in estimators:
        names.add(f"{cls.__module__}.{cls.__qualname__}")
    for modname in SKLEARN_INTERNAL_MODULES:
        try:
            mod = importlib.import_module(modname)
        except ImportError:
            continue
        for obj in vars(mod).values():  # classes defined there, not helpers it imports (joblib's Parallel)
            if inspect.isclass(obj) and obj.__module__ == modname and not _callable_instances(obj):
                names.add(f"{obj.__module__}.{obj.__qualname__}")
    return frozenset(names)


def _callable_instances(cls) -> bool:
    """Classes whose instances do work when called (`Parallel(...)(jobs)`) are no data types."""
    return "__call__" in vars(cls)


@functools.lru_cache(maxsize=None)
def _numpy_scalar_types() -> frozenset[str]:
    import numpy as np
    return frozenset(f"numpy.{t.__name__}" for t in set(np.sctypeDict.values()))


@functools.lru_cache(maxsize=None)
def torch_weights_types() -> frozenset[str]:
    """What `torch.load(weights_only=True)` itself accepts (tensors, storages, dtypes, OrderedDict)."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals
        return frozenset(_get_allowed_globals())
    except (ImportError, AttributeError):  # a torch without the private list: the names a state_dict uses
        return frozenset({"collections.OrderedDict", "torch._utils._rebuild_tensor_v2",
                          "torch._utils._rebuild_parameter", "torch.FloatStorage", "torch.LongStorage"})


@functools.lru_cache(maxsize=None)
def torch_module_types() -> frozenset[str]:
    """Every `torch.nn` layer class: a pickled nn.Module built only from these runs no code of its own."""
    import torch.nn as nn
    names = {"torch.nn.parameter.Parameter", "torch.nn.parameter.Buffer", "torch._utils._rebuild_parameter",
             "torch._utils._rebuild_parameter_with_state", "torch.Size"}
    for obj in vars(nn).values():
        if inspect.isclass(obj) and issubclass(obj, nn.Module) and obj.__module__.startswith("torch.nn."):
            names.add(f"{obj.__module__}.{obj.__qualname__}")
    return frozenset(names)


@functools.lru_cache(maxsize=None)
def trusted_types() -> frozenset[str]:
    return STATIC_TYPES | _sklearn_types() | _numpy_scalar_types() | torch_weights_types() | torch_module_types()


# What a plain state dict uses, known without importing torch (a test checks each is on torch's own list):
# `mlwarden scan` of a weights file then imports no torch.
TORCH_WEIGHTS_COMMON = frozenset({"torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter"} | {
    f"torch.{t}Storage" for t in ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte",
                                  "Bool")})


def _is_trusted(name: str) -> bool:
    """`name in trusted_types()`, importing only the library the name belongs to (numpy for a numpy scalar,
    scikit-learn for an estimator, torch for a torch type that is not on the common list)."""
    if name in STATIC_TYPES or name in TORCH_WEIGHTS_COMMON:
        return True
    top = name.split(".", 1)[0]
    if top == "sklearn":
        return name in _sklearn_types()
    if top == "numpy":
        return name in _numpy_scalar_types()
    if top == "torch":
        return name in torch_weights_types() or name in torch_module_types()
    return False   # torch's list names no other module outside STATIC_TYPES (tests/io checks it)


# Cython's way to rebuild a cdef class: `newObj(cls)` is `cls.__new__(cls)`. Trusted as a constructor: the
# loader lets it construct only a class the unpickler itself imported as trusted (io/models.py).
CONSTRUCTORS = {"sklearn.neighbors._kd_tree.newObj", "sklearn.neighbors._ball_tree.newObj",
                "sklearn.metrics._dist_metrics.newObj"}
STATIC_TYPES = frozenset(BUILTIN_DATA | STDLIB_DATA | NUMPY_DATA | SCIPY_SPARSE | CONSTRUCTORS | SKLEARN_CALLABLE_DATA)


def is_dangerous(name: str) -> bool:
    return name in DANGEROUS_BUILTINS or any(name == m or name.startswith(m + ".") for m in DANGEROUS_MODULES)


def classify(name: str, kind: str = "type", trust: frozenset[str] | set[str] = frozenset()) -> str:
    """'trusted', 'trusted-by-user', 'dangerous' or 'untrusted' for one reference.

    kind is 'type' (a class to construct), 'type-value' (a type passed as a value) or 'function' (a
    callable that is not a type: never trusted unless the user names it)."""
    if name in trust:
        return "trusted-by-user"
    if is_dangerous(name):
        return "dangerous"
    if kind == "function":
        return "untrusted"
    if kind == "type-value":
        return "trusted" if name in TYPE_VALUES or name in _numpy_scalar_types() else "untrusted"
    module, _, attr = name.rpartition(".")
    if attr.startswith("__pyx_unpickle_"):  # Cython's rebuild function for a class: as trusted as the class
        name = f"{module}.{attr[len('__pyx_unpickle_'):]}"
    return "trusted" if _is_trusted(name) else "untrusted"


def resolve(name: str):
    """Import the object a trusted name refers to (for an unpickler's allowlist). Never called on a name
    that is neither on the lists nor named by the user."""
    module, _, attr = name.rpartition(".")
    while module:
        try:
            obj = importlib.import_module(module)
            break
        except ImportError:
            module, _, head = module.rpartition(".")
            attr = f"{head}.{attr}"
    else:
        raise ImportError(name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj
