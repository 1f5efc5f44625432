"""The fixed table of ONNX operators a converted graph may use, each written here in torch.

Semantics follow the ONNX operator specification (https://onnx.ai/onnx/operators/), including the changes
between opsets that exported classifiers meet: Softmax/LogSoftmax coerce to 2-D with axis 1 before opset 13
and take one axis (default -1) from 13; Squeeze/Unsqueeze/ReduceSum read their axes from an input from
opset 13, ReduceMean/ReduceMax from 18; Clip and Pad read bounds and pads from inputs from opset 11, Slice
from 10. Every op is `fn(inputs, attrs, opset) -> tensor or tuple`; a missing optional input is None.

Growth is bounded: an op whose output can be larger than its inputs (broadcasting, Concat, MatMul, Gather,
padding) checks the output's element count against MAX_ELEMENTS before torch allocates it.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .onnx_shapes import Dims

MAX_ELEMENTS = 1 << 28   # one tensor of the converted graph (1 GiB of float32)

Op = Callable[[list, dict, int], Any]

# ONNX TensorProto data types -> torch (onnx.TensorProto.FLOAT = 1, ...)
DTYPES = {1: torch.float32, 2: torch.uint8, 3: torch.int8, 5: torch.int16, 6: torch.int32, 7: torch.int64,
          9: torch.bool, 10: torch.float16, 11: torch.float64, 16: torch.bfloat16}


class TooLarge(ValueError):
    """An op would make a tensor over MAX_ELEMENTS (a hostile shape or padding); raised before allocating."""


def bounded(op: str, n: int) -> None:
    if isinstance(n, int) and n > MAX_ELEMENTS:   # a symbolic size (under torch.export) is not a hostile one
        raise TooLarge(f"{op} would make a tensor of {n:,} elements (limit {MAX_ELEMENTS:,})")


def ints(t: Tensor | Dims | None) -> list[int]:
    if isinstance(t, Dims):
        return list(t.values)   # sizes, symbolic under torch.export
    return [] if t is None else [int(v) for v in t.reshape(-1).tolist()]


def _axes(a: list, k: dict, opset: int, since: int, i: int = 1) -> list[int] | None:
    """Axes from the attribute before opset `since`, from input i from then on (None: not given)."""
    if opset >= since:
        return ints(a[i]) if len(a) > i and a[i] is not None else None
    return list(k["axes"]) if "axes" in k else None


def _binary(fn):
    def op(a, k, opset):
        bounded(fn.__name__, math.prod(torch.broadcast_shapes(a[0].shape, a[1].shape)))
        return fn(a[0], a[1])
    return op


def _div(x, y):
    if not x.is_floating_point() and not y.is_floating_point():
        return torch.div(x, y, rounding_mode="trunc")   # ONNX integer division truncates
    return x / y


def _matmul(a, k, opset):
    x, y = a
    if x.ndim >= 2 and y.ndim >= 2:
        batch = torch.broadcast_shapes(x.shape[:-2], y.shape[:-2])
        bounded("MatMul", math.prod(batch) * x.shape[-2] * y.shape[-1])
    return torch.matmul(x, y)


def _gemm(a, k, opset):
    x, w = a[0], a[1]
    x = x.t() if k.get("transA", 0) else x
    w = w.t() if k.get("transB", 0) else w
    bounded("Gemm", x.shape[0] * w.shape[1])
    y = k.get("alpha", 1.0) * (x @ w)
    c = a[2] if len(a) > 2 else None
    return y if c is None else y + k.get("beta", 1.0) * c


def _softmax(log: bool):
    def op(a, k, opset):
        x = a[0]
        f = torch.log_softmax if log else torch.softmax
        if opset >= 13:
            return f(x, dim=k.get("axis", -1))
        axis = k.get("axis", 1) % max(x.ndim, 1)   # before 13: coerced to 2-D at axis
        return f(x.reshape(math.prod(x.shape[:axis]), -1), dim=1).reshape(x.shape)
    return op


def _flatten(a, k, opset):
    x = a[0]
    axis = k.get("axis", 1)
    axis = axis + x.ndim if axis < 0 else axis
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


def _reshape(a, k, opset):
    x, want = a[0], ints(a[1])
    if k.get("allowzero", 0) == 0:
        want = [x.shape[i] if d == 0 and i < x.ndim else d for i, d in enumerate(want)]
    if sum(d == -1 for d in want) > 1 or any(d < -1 for d in want):
        raise ValueError(f"Reshape to {want[:8]}: at most one -1 and no other negative size")
    known = math.prod(d for d in want if d != -1)
    if -1 in want:
        if known == 0 or x.numel() % known:
            raise ValueError(f"Reshape of {x.numel()} elements to {want[:8]}")
    elif known != x.numel():
        bounded("Reshape", known)
        raise ValueError(f"Reshape of {x.numel()} elements to {want[:8]} ({known:,} elements)")
    return x.reshape(want)


def _transpose(a, k, opset):
    x = a[0]
    return x.permute(*k.get("perm", list(range(x.ndim))[::-1]))


def _concat(a, k, opset):
    xs = [x for x in a if x is not None]
    bounded("Concat", sum(x.numel() for x in xs))
    return torch.cat(xs, dim=k["axis"])


def _shape(a, k, opset):
    dims = list(a[0].shape)
    return torch.tensor(dims[k.get("start", 0):k.get("end", len(dims))] if opset >= 15 else dims, dtype=torch.int64,
                        device=a[0].device)


def _gather(a, k, opset):
    x, idx = a
    axis = k.get("axis", 0) % max(x.ndim, 1)
    bounded("Gather", x.numel() // max(x.shape[axis], 1) * idx.numel())
    i = idx.to(torch.int64)
    i = torch.where(i < 0, i + x.shape[axis], i)
    return x.index_select(axis, i.reshape(-1)).reshape((*x.shape[:axis], *idx.shape, *x.shape[axis + 1:]))


def _unsqueeze(a, k, opset):
    x, axes = a[0], _axes(a, k, opset, 13) or []
    rank = x.ndim + len(axes)
    for ax in sorted(d % rank for d in axes):
        x = x.unsqueeze(ax)
    return x


def _squeeze(a, k, opset):
    x, axes = a[0], _axes(a, k, opset, 13)
    if axes is None:
        return x.squeeze() if x.ndim else x
    for ax in sorted((d % x.ndim for d in axes), reverse=True):
        x = x.squeeze(ax)
    return x


def _cast(a, k, opset):
    to = k["to"]
    if to not in DTYPES:
        raise ValueError(f"Cast to ONNX type {to}")
    return a[0].to(DTYPES[to])


def _clip(a, k, opset):
    x = a[0]
    if opset < 11:
        return x.clamp(k.get("min", -math.inf), k.get("max", math.inf))
    lo = a[1] if len(a) > 1 else None
    hi = a[2] if len(a) > 2 else None
    return x.clamp(lo.to(x.dtype) if lo is not None else None, hi.to(x.dtype) if hi is not None else None)


def padded(x: Tensor, begin: list[int], end: list[int], value: float = 0.0, mode: str = "constant") -> Tensor:
    """x padded at the front and back of its last len(begin) axes (negative pads crop), size checked first."""
    n = len(begin)
    shape = list(x.shape[:x.ndim - n]) + [s + b + e for s, b, e in zip(x.shape[x.ndim - n:], begin, end)]
    if any(s < 0 for s in shape):
        raise ValueError(f"padding {begin}+{end} leaves a negative size")
    bounded("Pad", math.prod(shape))
    if not any(begin) and not any(end):
        return x
    pairs = [p for b, e in zip(reversed(begin), reversed(end)) for p in (b, e)]   # torch: last axis first
    return F.pad(x, pairs, mode=mode, value=value) if mode == "constant" else F.pad(x, pairs, mode=mode)


PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}   # ONNX -> torch


def _pad(a, k, opset):
    x = a[0]
    if opset < 11:
        pads, value = list(k.get("pads", k.get("paddings", []))), k.get("value", 0.0)
        axes = list(range(x.ndim))
    else:
        pads = ints(a[1])
        value = float(a[2].reshape(-1)[0]) if len(a) > 2 and a[2] is not None and a[2].numel() else 0.0
        axes = ints(a[3]) if len(a) > 3 and a[3] is not None else list(range(x.ndim))
    axes = [d % x.ndim for d in axes]
    if len(pads) != 2 * len(axes):
        raise ValueError(f"Pad: {len(pads)} pads for {len(axes)} axes")
    begin, end = [0] * x.ndim, [0] * x.ndim
    for i, ax in enumerate(axes):
        begin[ax], end[ax] = pads[i], pads[i + len(axes)]
    mode = PAD_MODES.get(k.get("mode", "constant"))
    if mode is None:
        raise ValueError(f"Pad mode {k.get('mode')!r}")
    first = next((i for i in range(x.ndim) if begin[i] or end[i]), x.ndim)
    if mode != "constant" and first < 2:
        raise ValueError("Pad: reflect/edge/wrap padding of the batch or channel axis")
    return padded(x, begin[first:], end[first:], value, mode) if first < x.ndim else x


def _reduce(fn, since: int):
    def op(a, k, opset):
        x, axes = a[0], _axes(a, k, opset, since)
        if not axes:
            if k.get("noop_with_empty_axes", 0):
                return x
            axes = list(range(x.ndim))
        return fn(x, dim=[d % x.ndim for d in axes], keepdim=bool(k.get("keepdims", 1)))
    return op


def _spatial(k: dict, x: Tensor, kernel: list[int]) -> tuple[list[int], list[int], list[int], list[int]]:
    """(strides, dilations, pads at the start, pads at the end) of a Conv or pool, auto_pad resolved."""
    n = len(kernel)
    strides, dil = list(k.get("strides", [1] * n)), list(k.get("dilations", [1] * n))
    auto = k.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for size, kk, s, d in zip(x.shape[2:], kernel, strides, dil):
            total = max(0, (math.ceil(size / s) - 1) * s + (kk - 1) * d + 1 - size)
            small = total // 2
            begin.append(small if auto == "SAME_UPPER" else total - small)
            end.append(total - begin[-1])
        return strides, dil, begin, end
    if auto not in ("NOTSET", "VALID"):
        raise ValueError(f"auto_pad {auto!r}")
    pads = list(k.get("pads", [0] * 2 * n)) if auto == "NOTSET" else [0] * 2 * n
    return strides, dil, pads[:n], pads[n:]


CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
MAXPOOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
AVGPOOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def _conv(a, k, opset):
    x, w = a[0], a[1]
    b = a[2] if len(a) > 2 else None
    kernel = list(w.shape[2:])
    if len(kernel) not in CONV:
        raise ValueError(f"Conv over {len(kernel)} spatial axes")
    strides, dil, begin, end = _spatial(k, x, kernel)
    if begin != end:
        x, pad = padded(x, begin, end), 0
    else:
        pad = begin
        bounded("Conv", x.numel() // max(math.prod(x.shape[2:]), 1)
                * math.prod(s + 2 * p for s, p in zip(x.shape[2:], begin)))
    return CONV[len(kernel)](x, w, b, strides, pad, dil, k.get("group", 1))


def _maxpool(a, k, opset):
    x, kernel = a[0], list(k["kernel_shape"])
    if len(kernel) not in MAXPOOL or k.get("storage_order", 0):
        raise ValueError("MaxPool over more than 3 axes or with storage_order")
    strides, dil, begin, end = _spatial(k, x, kernel)
    x = padded(x, begin, end, -math.inf)
    return MAXPOOL[len(kernel)](x, kernel, strides, 0, dil, bool(k.get("ceil_mode", 0)))


def _avgpool(a, k, opset):
    x, kernel = a[0], list(k["kernel_shape"])
    strides, dil, begin, end = _spatial(k, x, kernel)
    if len(kernel) not in AVGPOOL or any(d != 1 for d in dil):
        raise ValueError("AveragePool over more than 3 axes or dilated")
    pool = AVGPOOL[len(kernel)]
    ceil = bool(k.get("ceil_mode", 0))
    total = pool(padded(x, begin, end), kernel, strides, 0, ceil)
    if k.get("count_include_pad", 0) or not (any(begin) or any(end)):
        return total
    ones = torch.ones((1, 1, *x.shape[2:]), dtype=x.dtype, device=x.device)   # share of real cells per window
    return total / pool(padded(ones, begin, end), kernel, strides, 0, ceil)


def _batchnorm(a, k, opset):
    x, scale, bias, mean, var = a[:5]
    return F.batch_norm(x, mean, var, scale, bias, False, 0.0, k.get("epsilon", 1e-5))


def _dropout(a, k, opset):
    return a[0], torch.ones_like(a[0], dtype=torch.bool)   # inference: the identity, and a mask of ones


def _gelu(a, k, opset):
    return F.gelu(a[0], approximate=k.get("approximate", "none"))


def _slice(a, k, opset):
    x = a[0]
    if opset < 10:
        starts, ends, axes, steps = list(k["starts"]), list(k["ends"]), k.get("axes"), None
    else:
        starts, ends = ints(a[1]), ints(a[2])
        axes = ints(a[3]) if len(a) > 3 and a[3] is not None else None
        steps = ints(a[4]) if len(a) > 4 and a[4] is not None else None
    axes = list(axes) if axes is not None else list(range(len(starts)))
    steps = steps or [1] * len(starts)
    index = [slice(None)] * x.ndim
    for s, e, ax, st in zip(starts, ends, axes, steps):
        if st <= 0:
            raise ValueError("Slice with a step below 1")
        index[ax % x.ndim] = slice(s, e, st)
    return x[tuple(index)]


def _unary(fn) -> Op:
    return lambda a, k, opset: fn(a[0])


OPS: dict[str, Op] = {
    "Add": _binary(torch.add), "Sub": _binary(torch.sub), "Mul": _binary(torch.mul), "Div": _binary(_div),
    "Pow": _binary(torch.pow), "MatMul": _matmul, "Gemm": _gemm,
    "Relu": _unary(torch.relu), "Sigmoid": _unary(torch.sigmoid), "Tanh": _unary(torch.tanh),
    "Erf": _unary(torch.erf), "Exp": _unary(torch.exp), "Log": _unary(torch.log), "Sqrt": _unary(torch.sqrt),
    "Neg": _unary(torch.neg), "Abs": _unary(torch.abs), "Reciprocal": _unary(torch.reciprocal),
    "Softplus": _unary(F.softplus), "Identity": _unary(lambda x: x),
    "LeakyRelu": lambda a, k, opset: F.leaky_relu(a[0], k.get("alpha", 0.01)),
    "Elu": lambda a, k, opset: F.elu(a[0], k.get("alpha", 1.0)), "Gelu": _gelu,
    "Softmax": _softmax(False), "LogSoftmax": _softmax(True),
    "Conv": _conv, "MaxPool": _maxpool, "AveragePool": _avgpool,
    "GlobalAveragePool": lambda a, k, opset: a[0].mean(dim=list(range(2, a[0].ndim)), keepdim=True),
    "GlobalMaxPool": lambda a, k, opset: a[0].amax(dim=list(range(2, a[0].ndim)), keepdim=True),
    "BatchNormalization": _batchnorm, "Dropout": _dropout,
    "Flatten": _flatten, "Reshape": _reshape, "Transpose": _transpose, "Concat": _concat,
    "Shape": _shape, "Gather": _gather, "Unsqueeze": _unsqueeze, "Squeeze": _squeeze, "Cast": _cast,
    "Slice": _slice, "Clip": _clip, "Pad": _pad,
    "ReduceMean": _reduce(torch.mean, 18), "ReduceSum": _reduce(torch.sum, 13), "ReduceMax": _reduce(torch.amax, 18),
}

# outputs an op gives (all others give one): a node reading a further output (MaxPool's indices) is refused
OUTPUTS = {"Dropout": 2}


def refuse_attributes(op: str, k: dict, opset: int) -> str | None:
    """Why a node's attributes ask for what the table does not do (training-mode statistics), else None."""
    if op == "BatchNormalization" and (k.get("training_mode", 0) or k.get("spatial", 1) == 0
                                       or k.get("is_test", 1) == 0):
        return "BatchNormalization in training mode (or spatial=0)"
    if op == "Dropout" and k.get("is_test", 1) == 0:
        return "Dropout in training mode"
    if op in ("Add", "Sub", "Mul", "Div", "Pow") and k.get("broadcast", 0):
        return f"{op} with the pre-opset-7 broadcast attribute"
    return None
