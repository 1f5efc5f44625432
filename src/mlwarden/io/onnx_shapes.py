"""Shape arithmetic of a converted ONNX graph, kept as Python ints.

Exporters compute sizes in the graph: `x.view(x.size(0), -1)` becomes Shape -> Gather -> Unsqueeze -> Concat ->
Reshape. As int64 tensors these sizes would be data to torch.export (a converted module could not be saved as
a `.pt2`); as `Dims` (Python ints, symbolic under torch.export) they stay sizes. Each handler returns None
when its inputs are not all small shape values, and the node then runs as tensors through io/onnx_ops.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

MAX_DIMS = 64   # an int64 initializer of at most this many values (0-D or 1-D) is read as Dims
INT64 = (-(1 << 63), (1 << 63) - 1)


@dataclass(frozen=True)
class Dims:
    """A 0-D or 1-D int64 tensor held as Python ints (`shape` is () or (n,))."""
    values: tuple
    shape: tuple

    def tensor(self, device=None) -> torch.Tensor:
        return torch.tensor(list(self.values), dtype=torch.int64, device=device).reshape(self.shape)


def as_dims(t: torch.Tensor) -> Dims | None:
    """A small integer constant as Dims, else None."""
    if t.dtype != torch.int64 or t.ndim > 1 or t.numel() > MAX_DIMS:
        return None
    return Dims(tuple(int(v) for v in t.reshape(-1).tolist()), tuple(t.shape))


def _all_dims(a: list, n: int | None = None) -> bool:
    args = a if n is None else a[:n]
    return all(x is None or isinstance(x, Dims) for x in args) and isinstance(args[0], Dims)


def _shape(a, k, opset):
    dims = tuple(a[0].shape)
    if opset >= 15:
        dims = dims[k.get("start", 0):k.get("end", len(dims))]
    return Dims(dims, (len(dims),))


def _same(a, k, opset):   # Identity, and Cast to an integer type
    if not _all_dims(a) or (k.get("to", 7) not in (6, 7)):   # TensorProto INT32, INT64
        return None
    return a[0]


def _gather(a, k, opset):
    if not _all_dims(a) or len(a[0].shape) != 1 or k.get("axis", 0) not in (0, -1) or len(a[1].shape) > 1:
        return None
    data, idx = a[0].values, a[1].values
    return Dims(tuple(data[i] for i in idx), a[1].shape)


def _unsqueeze(a, k, opset):
    axes = (a[1].values if len(a) > 1 and a[1] is not None else None) if opset >= 13 else tuple(k.get("axes", ()))
    if not _all_dims(a) or a[0].shape != () or tuple(axes or ()) not in ((0,), (-1,)):
        return None
    return Dims(a[0].values, (1,))


def _squeeze(a, k, opset):
    axes = (a[1].values if len(a) > 1 and a[1] is not None else None) if opset >= 13 else k.get("axes")
    if not _all_dims(a) or a[0].shape != (1,) or tuple(axes or (0,)) not in ((0,), (-1,)):
        return None
    return Dims(a[0].values, ())


def _concat(a, k, opset):
    xs = [x for x in a if x is not None]
    if not all(isinstance(x, Dims) and len(x.shape) == 1 for x in xs) or k.get("axis") not in (0, -1):
        return None
    values = tuple(v for x in xs for v in x.values)
    return Dims(values, (len(values),))


def _slice(a, k, opset):
    if opset < 10 or not _all_dims(a) or len(a[0].shape) != 1:
        return None
    starts, ends = a[1].values, a[2].values
    steps = a[4].values if len(a) > 4 and a[4] is not None else (1,)
    if len(starts) != 1 or (len(a) > 3 and a[3] is not None and a[3].values not in ((0,), (-1,))) or steps[0] < 1:
        return None
    values = a[0].values[starts[0]:ends[0]:steps[0]]
    return Dims(values, (len(values),))


def _reshape(a, k, opset):   # a size between 0-D and 1-D (the dynamo exporter's Reshape of a scalar size)
    if not _all_dims(a) or a[1] is None or len(a[1].values) > 1:
        return None
    n, want = len(a[0].values), a[1].values
    if (want and want[0] not in (-1, n)) or (not want and n != 1):
        return None
    return Dims(a[0].values, (n,) if want else ())


def _trunc_div(x, y):
    q = abs(x) // abs(y)
    return q if (x >= 0) == (y >= 0) else -q


def _arith(fn):
    def op(a, k, opset):
        if not _all_dims(a) or a[1] is None or len(a[0].shape) > 1 or len(a[1].shape) > 1:
            return None
        x, y = a[0].values, a[1].values
        if len(x) != len(y) and 1 not in (len(x), len(y)):
            return None
        n = max(len(x), len(y))
        values = tuple(fn(x[i % len(x)], y[i % len(y)]) for i in range(n))
        shape = a[0].shape if len(a[0].shape) >= len(a[1].shape) else a[1].shape
        return Dims(values, (n,) if shape else ())
    return op


def _int64(fn):
    """A handler whose Dims stay what ONNX's int64 tensors can hold: at most MAX_DIMS values, each in int64's range;
    otherwise None, and the node runs as int64 tensors (wrapping as onnxruntime does, sizes bounded by io/onnx_ops).
    Python ints do not wrap: 40 Muls of a constant by itself made a number of 1.6 x 2^40 bits and the
    conversion of a 1 KB file never finished."""
    def op(a, k, opset):
        out = fn(a, k, opset)
        if out is None or len(out.values) <= MAX_DIMS and all(
                not isinstance(v, int) or INT64[0] <= v <= INT64[1] for v in out.values):   # symbolic: a real size
            return out
        return None
    return op


STATIC: dict[str, Callable] = {name: _int64(fn) for name, fn in {
    "Shape": _shape, "Identity": _same, "Cast": _same, "Gather": _gather, "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze, "Concat": _concat, "Slice": _slice, "Reshape": _reshape,
    "Add": _arith(lambda x, y: x + y), "Sub": _arith(lambda x, y: x - y), "Mul": _arith(lambda x, y: x * y),
    "Div": _arith(_trunc_div),
}.items()}

# inputs an op reads as a list of sizes (io/onnx_ops.py `ints`): Dims go to it as they are
SIZE_INPUTS = {"Reshape": {1}, "Unsqueeze": {1}, "Squeeze": {1}, "Slice": {1, 2, 3, 4}, "Pad": {1, 3},
               "ReduceMean": {1}, "ReduceSum": {1}, "ReduceMax": {1}}
