"""An ONNX classifier as a torch module, so white-box threats (gradients) run on ONNX files too.

The graph (ONNX IR spec: https://onnx.ai/onnx/repo-docs/IR.html) is interpreted, never executed: each node's
op_type in the default domain maps through the fixed table in io/onnx_ops.py, and initializers and Constant
nodes become float32 parameters (integers stay int64 buffers, for shape arithmetic). No code from the file is
run. Not convertible, and then audited black-box through onnxruntime as before, with the reason recorded:
an op outside the table, any other domain (ai.onnx.ml, com.microsoft, the model's own functions), subgraphs
(If/Loop/Scan), tensors in external-data files, more than one input, a node reading a tensor no earlier node
made (a cycle), a graph whose intermediates hold more than MAX_ACTIVATIONS values per sample, and a converted
module whose outputs differ from onnxruntime's on the user's samples.

Memory: a gradient keeps every node's output alive until backward (autograd saves them), so a small graph of
many nodes on one padded tensor (a Pad to 2^22 values, then a chain of Relus) would hold nodes x 16 MiB per
sample where onnxruntime, reusing buffers, holds 16 MiB. Before the converted module runs on a batch,
`measure` runs it on one sample, adds up the values of every new tensor each node makes and stops at the
first node that takes the total past the budget, so the check itself holds at most the budget and one node's
output (each op's output is bounded by onnx_ops.MAX_ELEMENTS). Without gradients the module drops each
tensor after its last reader.

Outputs: a graph that ends in probabilities (Softmax) gives white-box attacks no logits; the converted
module returns log-probabilities instead (LogSoftmax in the Softmax's place, or the log of probabilities
another way), whose softmax is the same probabilities, so scores, labels and attacks see one model.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..core.data import Dataset
from ..core.target import (
    Access,
    NumpyTarget,
    Target,
    TorchTarget,
    outputs_are_probabilities,
)
from .onnx_ops import DTYPES, MAX_ELEMENTS, OPS, OUTPUTS, refuse_attributes
from .onnx_shapes import SIZE_INPUTS, STATIC, Dims, as_dims
from .scan.formats import onnx_external_keys

MAX_NODES = 100_000
MIN_OPSET = 7          # elementwise ops broadcast numpy-style from opset 7
N_CHECK = 16           # user's samples the conversion is checked on
TOLERANCE = 1e-4       # max |converted - onnxruntime|, relative to max(1, max |onnxruntime|)
# values per sample all nodes' outputs may hold together (128 MiB of float32): what a gradient keeps alive for
# backward. The largest networks mlwarden names (--arch) fit: a 224x224 VGG16's conv, Relu and pool outputs
# come to 2^24.8 per sample, a 32x32 ResNet-18's to about 2^21, the tests' CNN to 2^11; a graph past it asks
# more of a white-box attack (200 samples at once) than any of them.
MAX_ACTIVATIONS = 1 << 25


class NotConvertible(ValueError):
    """Why a graph stays black-box: one line naming the op, node or tensor."""


@dataclass(frozen=True)
class Node:
    op: str
    name: str
    inputs: tuple[str, ...]    # "" for an optional input left out
    outputs: tuple[str, ...]
    attrs: dict


def _external(t, what: str, folder: Path | None) -> np.ndarray:
    """A tensor kept in an external-data file (ONNX external data spec: location, offset, length), read from
    the model's own folder only (the scan checked the location; checked again here), its length first."""
    from onnx import helper
    try:
        keys = onnx_external_keys(t)
    except ValueError as e:
        raise NotConvertible(str(e)) from None
    loc = keys.get("location", "")
    if folder is None or not loc:
        raise NotConvertible(f"{what} is kept in an external-data file with no folder to read it from")
    root = os.path.realpath(folder)
    where = os.path.realpath(os.path.join(root, loc))
    if os.path.isabs(loc) or os.path.commonpath([where, root]) != root or not os.path.isfile(where):
        raise NotConvertible(f"{what} reads external data from {loc!r}, not a file in the model's folder")
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).newbyteorder("<")
    want = math.prod(t.dims) * dtype.itemsize
    try:
        offset, length = int(keys.get("offset", 0)), int(keys.get("length", want))
    except ValueError:
        raise NotConvertible(f"{what} has a malformed external-data offset or length") from None
    if length != want or offset < 0 or offset + length > os.path.getsize(where):
        raise NotConvertible(f"{what}: its external data ({length} bytes at {offset}) does not hold {want} bytes "
                             f"inside {loc!r}")
    with open(where, "rb") as f:
        f.seek(offset)
        return np.frombuffer(f.read(length), dtype=dtype).reshape(tuple(t.dims))


def tensor(t, what: str, folder: Path | None = None) -> torch.Tensor:
    """A TensorProto as a torch tensor, its declared size checked before any array is made."""
    from onnx import TensorProto, numpy_helper
    n = math.prod(t.dims)
    if any(d < 0 for d in t.dims) or n > MAX_ELEMENTS:
        raise NotConvertible(f"{what} declares {n:,} elements (limit {MAX_ELEMENTS:,})")
    if t.data_type not in DTYPES or t.data_type == TensorProto.BFLOAT16:
        raise NotConvertible(f"{what} has ONNX data type {t.data_type}")
    try:
        a = _external(t, what, folder) if t.data_location == TensorProto.EXTERNAL else numpy_helper.to_array(t)
    except NotConvertible:
        raise
    except Exception as e:  # noqa: BLE001 - data that does not match its dims
        raise NotConvertible(f"{what} is malformed ({type(e).__name__})") from None
    x = torch.from_numpy(np.array(a, order="C", copy=True))   # not ascontiguousarray: it makes 0-d 1-d
    if x.is_floating_point():
        return x.to(torch.float32)
    return x if x.dtype == torch.bool else x.to(torch.int64)


def _attrs(node, where: str) -> dict:
    from onnx import AttributeProto, helper
    out = {}
    for a in node.attribute:
        if a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS):
            raise NotConvertible(f"{where} holds a subgraph (control flow)")
        if a.type in (AttributeProto.TENSOR,):
            out[a.name] = tensor(a.t, f"{where} attribute {a.name}")
        elif a.type in (AttributeProto.SPARSE_TENSOR, AttributeProto.SPARSE_TENSORS, AttributeProto.TENSORS,
                        AttributeProto.TYPE_PROTO, AttributeProto.TYPE_PROTOS):
            raise NotConvertible(f"{where} has a {AttributeProto.AttributeType.Name(a.type)} attribute")
        else:
            v = helper.get_attribute_value(a)
            out[a.name] = v.decode("utf-8", "replace") if isinstance(v, bytes) else (
                [s.decode("utf-8", "replace") if isinstance(s, bytes) else s for s in v] if isinstance(v, list) else v)
    return out


def _constant(attrs: dict, where: str) -> torch.Tensor:
    if "value" in attrs:
        return attrs["value"]
    for key, dtype in (("value_float", torch.float32), ("value_floats", torch.float32), ("value_int", torch.int64),
                       ("value_ints", torch.int64)):
        if key in attrs:
            return torch.tensor(attrs[key], dtype=dtype)
    raise NotConvertible(f"{where}: a Constant of a kind the table does not read ({', '.join(attrs)})")


def _opset(model) -> int:
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if not versions:
        raise NotConvertible("the model imports no default-domain opset")
    if versions[0] < MIN_OPSET:
        raise NotConvertible(f"opset {versions[0]} is older than {MIN_OPSET}")
    return versions[0]


def _output(graph) -> str:
    """The graph output the scores come from, as io/models.py `OnnxScores` picks it: the last declared 2-D one."""
    def rank(v):
        t = v.type.tensor_type
        return len(t.shape.dim) if v.type.HasField("tensor_type") and t.HasField("shape") else None
    outs = list(graph.output)
    if not outs:
        raise NotConvertible("the graph has no output")
    two = [v.name for v in outs if rank(v) == 2]
    return two[-1] if two else outs[0].name


def convert(model, folder: Path | None = None) -> OnnxModule:
    """The nodes the scores output needs, checked and in order, as an OnnxModule; NotConvertible otherwise.
    `folder`: where the model's external-data files are (its own folder)."""
    graph, opset = model.graph, _opset(model)
    if len(graph.node) > MAX_NODES:
        raise NotConvertible(f"{len(graph.node):,} nodes (limit {MAX_NODES:,})")
    inits = {t.name: tensor(t, f"initializer {t.name!r}", folder) for t in graph.initializer}
    if len(graph.sparse_initializer):
        raise NotConvertible("sparse initializers")
    inputs = [v for v in graph.input if v.name not in inits]
    if len(inputs) != 1:
        raise NotConvertible(f"{len(inputs)} graph inputs (one is converted)")
    inp = inputs[0]
    output = _output(graph)
    producer: dict[str, int] = {}
    for i, n in enumerate(graph.node):
        for o in n.output:
            if o and (o in producer or o in inits or o == inp.name):
                raise NotConvertible(f"tensor {o!r} is written twice")
            if o:
                producer[o] = i
    needed, todo = set(), [output]
    while todo:   # the nodes the output depends on: a label branch (ArgMax, ai.onnx.ml) is never converted
        name = todo.pop()
        i = producer.get(name)
        if i is not None and i not in needed:
            needed.add(i)
            todo += [x for x in graph.node[i].input if x]
    known = set(inits) | {inp.name}
    nodes = []
    for i, n in enumerate(graph.node):
        if i not in needed:
            continue
        where = f"node {n.name or i!r} ({n.op_type})"
        if n.domain not in ("", "ai.onnx"):
            raise NotConvertible(f"op {n.domain}.{n.op_type} ({where}) is not supported")
        if n.op_type not in OPS and n.op_type != "Constant":
            raise NotConvertible(f"op {n.op_type} ({where}) is not supported")
        for x in n.input:
            if x and x not in known:
                why = "made by a later node (a cycle)" if x in producer else "that no node makes"
                raise NotConvertible(f"{where} reads tensor {x!r} {why}")
        attrs = _attrs(n, where)
        why = refuse_attributes(n.op_type, attrs, opset)
        if why:
            raise NotConvertible(f"{why} ({where})")
        made = [o for o in n.output[:OUTPUTS.get(n.op_type, 1)] if o]
        if n.op_type == "Constant":
            inits[n.output[0]] = _constant(attrs, where)
        else:
            nodes.append(Node(n.op_type, n.name, tuple(n.input), tuple(n.output[:OUTPUTS.get(n.op_type, 1)]), attrs))
        known |= set(made)
        for extra in n.output[OUTPUTS.get(n.op_type, 1):]:
            if extra and (any(extra in graph.node[j].input for j in needed) or extra == output):
                raise NotConvertible(f"{where}: its output {extra!r} (e.g. MaxPool's indices) is not supported")
    if output not in known:
        raise NotConvertible(f"the output {output!r} is made by no node")
    log = False
    if nodes and nodes[-1].outputs[0] == output and nodes[-1].op == "Softmax" and all(
            output not in m.inputs for m in nodes):
        nodes[-1] = Node("LogSoftmax", *[getattr(nodes[-1], f) for f in ("name", "inputs", "outputs", "attrs")])
        log = True
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim][1:]
    elem = inp.type.tensor_type.elem_type
    return OnnxModule(nodes, inits, inp.name, dims, DTYPES.get(elem, torch.float32), output, opset, log)


class OnnxModule(nn.Module):
    """The converted graph: runs its nodes in order through the op table. `log_probs` says its output is
    log-probabilities (see the module docstring); `ops` lists the op types it uses."""

    def __init__(self, nodes: list[Node], inits: dict[str, torch.Tensor], input_name: str, input_dims: list,
                 input_dtype: torch.dtype, output: str, opset: int, log_probs: bool):
        super().__init__()
        self.nodes, self.input_name, self.output, self.opset = nodes, input_name, output, opset
        self.input_dims, self.input_dtype = input_dims, input_dtype
        self.log_probs, self.log_of_output = log_probs, False
        self.names: dict[str, str] = {}
        self.dims = {name: d for name, t in inits.items() if (d := as_dims(t)) is not None}   # small int constants
        last = {name: k for k, n in enumerate(nodes) for name in (*n.inputs, *n.outputs) if name}
        self.frees = [tuple(name for name in (*n.inputs, *n.outputs) if name and last[name] == k and name != output)
                      for k, n in enumerate(nodes)]   # the tensors no later node reads, dropped after node k
        for i, (name, t) in enumerate(inits.items()):
            self.names[name] = f"t{i}"
            if t.is_floating_point():
                self.register_parameter(f"t{i}", nn.Parameter(t, requires_grad=False))
            else:
                self.register_buffer(f"t{i}", t)

    @property
    def ops(self) -> list[str]:
        return sorted({n.op for n in self.nodes})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)

    def run(self, x: torch.Tensor, budget: int | None = None) -> torch.Tensor:
        """The graph on x. With a `budget`, keeps every tensor and raises NotConvertible as soon as the new
        tensors the nodes made hold more than `budget` values (`measure`); without, drops each after its last use
        (autograd still holds what backward needs)."""
        if len(self.input_dims) != x.ndim - 1:   # the data's sample shape -> the graph's, as OnnxScores does
            x = x.reshape(x.shape[0], *[d if d else -1 for d in self.input_dims])
        env = {name: self.dims.get(name) or getattr(self, attr) for name, attr in self.names.items()}
        env[self.input_name] = x.to(self.input_dtype)
        seen = set() if budget is None else {   # storages not made per sample: the input and the constants
            v.untyped_storage().data_ptr() for v in env.values() if isinstance(v, torch.Tensor)}
        total = 0
        for k, n in enumerate(self.nodes):
            args = [env[i] if i else None for i in n.inputs]
            out = STATIC[n.op](args, n.attrs, self.opset) if n.op in STATIC else None   # sizes stay Python ints
            if out is None:
                keep = SIZE_INPUTS.get(n.op, ())
                args = [a.tensor(x.device) if isinstance(a, Dims) and i not in keep else a for i, a in enumerate(args)]
                out = OPS[n.op](args, n.attrs, self.opset)
            for name, value in zip(n.outputs, out if isinstance(out, tuple) else (out,)):
                if name:
                    env[name] = value
                    if budget is not None and isinstance(value, torch.Tensor):
                        total += _new_values(value, seen)
            if budget is None:
                for name in self.frees[k]:
                    env.pop(name, None)
            elif total > budget:
                at = f"{n.name!r}, " if n.name else ""
                raise NotConvertible(f"the graph holds over {total:,} values per sample in its intermediates by "
                                     f"node {at}{n.op}, {k + 1} of {len(self.nodes)}, over the budget of "
                                     f"{budget:,} a gradient keeps alive")
        y = env[self.output]
        y = y.tensor(x.device) if isinstance(y, Dims) else y
        return torch.log(y.clamp_min(1e-30)) if self.log_of_output else y


def _new_values(t: torch.Tensor, seen: set[int]) -> int:
    """The values of t's storage when no tensor counted before shares it (a view or an input passed through
    allocates nothing)."""
    storage = t.untyped_storage()
    if storage.data_ptr() in seen:
        return 0
    seen.add(storage.data_ptr())
    return storage.nbytes() // max(t.element_size(), 1)


def measure(module: OnnxModule, x: torch.Tensor) -> None:
    """NotConvertible when the graph's intermediates for one sample of x hold more than MAX_ACTIVATIONS values,
    raised at the node that passes it, before any later node runs."""
    with torch.no_grad():
        module.run(x[:1], budget=MAX_ACTIVATIONS)


def check(module: OnnxModule, ref: torch.Tensor, x: torch.Tensor) -> float:
    """max |module - onnxruntime's outputs `ref`| on x, in probabilities where the module gives log-probabilities;
    turns on `log_of_output` when onnxruntime's outputs are probabilities the module gives as they are. The
    intermediates' size is measured on one sample first (`measure`)."""
    measure(module, x)
    with torch.no_grad():
        out = module(x).to(torch.float32)
    out = out.exp() if module.log_probs else out
    if out.shape != ref.shape:
        raise NotConvertible(f"the converted graph gives shape {list(out.shape)}, onnxruntime {list(ref.shape)}")
    diff = float((out - ref).abs().max()) if out.numel() else 0.0
    if not math.isfinite(diff) or diff > TOLERANCE * max(1.0, float(ref.abs().max())):
        raise NotConvertible(f"the converted graph differs from onnxruntime by up to {diff:.3g} on "
                             f"{len(x)} samples")
    if not module.log_probs and outputs_are_probabilities(ref):
        module.log_of_output = module.log_probs = True
    xg = x[:2].clone().requires_grad_(True)
    if not module(xg).requires_grad:
        raise NotConvertible("the output does not depend differentiably on the input")
    return diff


class OnnxTorchTarget(TorchTarget):
    """An ONNX model converted to torch and checked against onnxruntime: white-box."""

    kind = "onnx"

    def __init__(self, module: OnnxModule, data: Dataset, name: str, diff: float, n: int):
        super().__init__(module, data.n_classes, data.input_shape, name=name)
        self.conversion = {"white_box": True, "ops": module.ops, "opset": module.opset,
                           "max_abs_diff_vs_onnxruntime": diff, "checked_on": n,
                           "outputs": ("log-probabilities (log of its softmax)" if module.log_probs
                                       else "as in the graph")}

    def describe(self) -> dict:
        return {**super().describe(), "onnx": self.conversion}


class OnnxScoresTarget(NumpyTarget):
    """An ONNX model through onnxruntime, scores only; `access_note` says why it was not converted."""

    def __init__(self, scores, data: Dataset, name: str, why: str):
        super().__init__(scores, data.n_classes, data.input_shape, Access.SCORES, name, "onnx")
        self.access_note = f"black-box only: {why}"

    def describe(self) -> dict:
        return {**super().describe(), "onnx": {"white_box": False, "why": self.access_note}}


def onnx_target(model, scores, data: Dataset, name: str, folder: Path | None = None) -> Target:
    """White-box when the graph converts and agrees with onnxruntime (`scores`, an io/models.py OnnxScores) on
    the user's samples; otherwise scores-only, saying why. `folder` holds the model's external-data files."""
    x = torch.cat([data.x_train[:N_CHECK // 2], data.x_test[:N_CHECK // 2]]).to(torch.float32)
    try:
        ref = torch.from_numpy(np.ascontiguousarray(scores(x.numpy()))).to(torch.float32)
    except Exception:  # noqa: BLE001 - onnxruntime itself fails on the data: `probe` says so in one line
        return OnnxScoresTarget(scores, data, name, "onnxruntime cannot run the samples")
    try:
        module = convert(model, folder)
        diff = check(module, ref, x)
    except NotConvertible as e:
        return OnnxScoresTarget(scores, data, name, str(e))
    except Exception as e:  # noqa: BLE001 - the converted graph failing where onnxruntime does not
        msg = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
        return OnnxScoresTarget(scores, data, name, f"the converted graph fails on the samples "
                                                    f"({type(e).__name__}: {msg})")
    return OnnxTorchTarget(module, data, name, diff, len(x))
