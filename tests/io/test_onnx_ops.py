"""Every op of the ONNX -> torch table (io/onnx_ops.py) against onnxruntime, one node at a time, in the
attribute and opset variants exporters write (auto_pad, asymmetric pads, groups, dilations, ceil mode,
count_include_pad, axes as attribute before opset 13 and as input after, Softmax's 2-D coercion before 13)."""
import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from mlwarden.io.onnx_torch import convert

rng = np.random.default_rng(0)
X4 = rng.normal(size=(2, 4, 7, 6)).astype(np.float32)   # (n, c, h, w)
X3 = rng.normal(size=(3, 5, 4)).astype(np.float32)
X2 = rng.normal(size=(3, 6)).astype(np.float32)
I64 = lambda *v: np.array(v, dtype=np.int64)  # noqa: E731
F32 = lambda *v: np.array(v, dtype=np.float32)  # noqa: E731
W = lambda *s: rng.normal(size=s).astype(np.float32)  # noqa: E731

# (id, op, x, [further inputs: numpy arrays (initializers) or "" (left out)], attributes, opset, output type)
CASES = [
    ("gemm", "Gemm", X2, [W(4, 6), W(4)], dict(transB=1, alpha=0.5, beta=2.0), 17, TensorProto.FLOAT),
    ("gemm-transA", "Gemm", X2, [W(3, 5)], dict(transA=1), 17, TensorProto.FLOAT),
    ("matmul-batched", "MatMul", X3, [W(4, 2)], {}, 17, TensorProto.FLOAT),
    ("add-broadcast", "Add", X4, [W(7, 1)], {}, 17, TensorProto.FLOAT),
    ("sub", "Sub", X2, [W(6)], {}, 17, TensorProto.FLOAT),
    ("mul", "Mul", X2, [W(3, 1)], {}, 17, TensorProto.FLOAT),
    ("div", "Div", X2, [F32(2.0)], {}, 17, TensorProto.FLOAT),
    ("pow", "Pow", np.abs(X2) + 0.1, [F32(1.5)], {}, 17, TensorProto.FLOAT),
    ("relu", "Relu", X2, [], {}, 17, TensorProto.FLOAT),
    ("leakyrelu", "LeakyRelu", X2, [], dict(alpha=0.2), 17, TensorProto.FLOAT),
    ("sigmoid", "Sigmoid", X2, [], {}, 17, TensorProto.FLOAT),
    ("tanh", "Tanh", X2, [], {}, 17, TensorProto.FLOAT),
    ("erf", "Erf", X2, [], {}, 17, TensorProto.FLOAT),
    ("gelu", "Gelu", X2, [], {}, 20, TensorProto.FLOAT),
    ("gelu-tanh", "Gelu", X2, [], dict(approximate="tanh"), 20, TensorProto.FLOAT),
    ("elu", "Elu", X2, [], dict(alpha=0.5), 17, TensorProto.FLOAT),
    ("softplus", "Softplus", X2, [], {}, 17, TensorProto.FLOAT),
    ("exp", "Exp", X2, [], {}, 17, TensorProto.FLOAT),
    ("softmax-11-coerced", "Softmax", X3, [], dict(axis=1), 11, TensorProto.FLOAT),
    ("softmax-11-default", "Softmax", X3, [], {}, 11, TensorProto.FLOAT),
    ("softmax-13-axis1", "Softmax", X3, [], dict(axis=1), 13, TensorProto.FLOAT),
    ("softmax-13-default", "Softmax", X3, [], {}, 13, TensorProto.FLOAT),
    ("logsoftmax-11", "LogSoftmax", X3, [], {}, 11, TensorProto.FLOAT),
    ("conv-groups-asym-pads", "Conv", X4, [W(6, 2, 3, 2), W(6)],
     dict(group=2, pads=[0, 1, 1, 0], strides=[2, 1], dilations=[1, 2]), 17, TensorProto.FLOAT),
    ("conv-same-upper", "Conv", X4, [W(3, 4, 3, 3)], dict(auto_pad="SAME_UPPER", strides=[2, 2]), 17,
     TensorProto.FLOAT),
    ("conv-same-lower", "Conv", X4, [W(3, 4, 2, 2)], dict(auto_pad="SAME_LOWER"), 17, TensorProto.FLOAT),
    ("conv-valid", "Conv", X4, [W(3, 4, 3, 3)], dict(auto_pad="VALID"), 17, TensorProto.FLOAT),
    ("conv1d", "Conv", X3, [W(2, 5, 3), W(2)], dict(pads=[1, 1]), 17, TensorProto.FLOAT),
    ("maxpool-pads", "MaxPool", X4, [], dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), 17,
     TensorProto.FLOAT),
    ("maxpool-ceil", "MaxPool", X4, [], dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1), 17,
     TensorProto.FLOAT),
    ("maxpool-same", "MaxPool", X4, [], dict(kernel_shape=[3, 2], auto_pad="SAME_UPPER", strides=[2, 2]), 17,
     TensorProto.FLOAT),
    ("maxpool-dilated", "MaxPool", X4, [], dict(kernel_shape=[2, 2], dilations=[2, 2]), 17, TensorProto.FLOAT),
    ("avgpool", "AveragePool", X4, [], dict(kernel_shape=[2, 2], strides=[2, 2]), 17, TensorProto.FLOAT),
    ("avgpool-pads-exclude", "AveragePool", X4, [], dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), 17,
     TensorProto.FLOAT),
    ("avgpool-pads-include", "AveragePool", X4, [], dict(kernel_shape=[3, 3], pads=[1, 0, 1, 2],
                                                         count_include_pad=1), 17, TensorProto.FLOAT),
    ("globalavgpool", "GlobalAveragePool", X4, [], {}, 17, TensorProto.FLOAT),
    ("globalmaxpool", "GlobalMaxPool", X4, [], {}, 17, TensorProto.FLOAT),
    ("batchnorm", "BatchNormalization", X4, [W(4), W(4), W(4), np.abs(W(4)) + 0.5], dict(epsilon=1e-3), 15,
     TensorProto.FLOAT),
    ("flatten-axis2", "Flatten", X4, [], dict(axis=2), 13, TensorProto.FLOAT),
    ("flatten-axis0", "Flatten", X4, [], dict(axis=0), 13, TensorProto.FLOAT),
    ("reshape-0-and-minus1", "Reshape", X4, [I64(0, -1, 6)], {}, 14, TensorProto.FLOAT),
    ("transpose", "Transpose", X4, [], dict(perm=[0, 2, 3, 1]), 13, TensorProto.FLOAT),
    ("transpose-default", "Transpose", X3, [], {}, 13, TensorProto.FLOAT),
    ("concat", "Concat", X4, [W(2, 1, 7, 6)], dict(axis=1), 13, TensorProto.FLOAT),
    ("identity", "Identity", X2, [], {}, 13, TensorProto.FLOAT),
    ("dropout-13", "Dropout", X2, [np.array(0.5, dtype=np.float32)], {}, 13, TensorProto.FLOAT),
    ("unsqueeze-11", "Unsqueeze", X2, [], dict(axes=[0, -1]), 11, TensorProto.FLOAT),
    ("unsqueeze-13", "Unsqueeze", X2, [I64(1, 3)], {}, 13, TensorProto.FLOAT),
    ("squeeze-11", "Squeeze", X4[:, :1], [], dict(axes=[1]), 11, TensorProto.FLOAT),
    ("squeeze-13", "Squeeze", X4[:, :1, :1], [I64(1, -2)], {}, 13, TensorProto.FLOAT),
    ("squeeze-all", "Squeeze", X4[:, :1, :1], [], {}, 13, TensorProto.FLOAT),
    ("shape-15", "Shape", X4, [], dict(start=1, end=-1), 15, TensorProto.INT64),
    ("gather-neg", "Gather", X4, [I64(-1, 0)], dict(axis=1), 13, TensorProto.FLOAT),
    ("gather-scalar", "Gather", X3, [np.array(2, dtype=np.int64)], dict(axis=2), 13, TensorProto.FLOAT),
    ("cast", "Cast", X2 * 3, [], dict(to=TensorProto.INT64), 13, TensorProto.INT64),
    ("clip-10", "Clip", X2, [], dict(min=-0.5, max=0.5), 10, TensorProto.FLOAT),
    ("clip-11-min-only", "Clip", X2, [F32(-0.3)], {}, 11, TensorProto.FLOAT),
    ("clip-13-max-only", "Clip", X2, ["", F32(0.2)], {}, 13, TensorProto.FLOAT),
    ("pad-10", "Pad", X4, [], dict(pads=[0, 0, 1, 2, 0, 0, 3, 0], value=1.5), 10, TensorProto.FLOAT),
    ("pad-11", "Pad", X4, [I64(0, 0, 1, -1, 0, 1, 2, 1), F32(0.5)], {}, 11, TensorProto.FLOAT),
    ("pad-reflect", "Pad", X4, [I64(0, 0, 2, 1, 0, 0, 1, 2)], dict(mode="reflect"), 13, TensorProto.FLOAT),
    ("pad-edge", "Pad", X4, [I64(0, 0, 2, 1, 0, 0, 1, 2)], dict(mode="edge"), 13, TensorProto.FLOAT),
    ("pad-18-axes", "Pad", X4, [I64(1, 2, 3, 0), "", I64(-1, 2)], {}, 18, TensorProto.FLOAT),
    ("reducemean-13", "ReduceMean", X4, [], dict(axes=[2, 3], keepdims=0), 13, TensorProto.FLOAT),
    ("reducemean-18", "ReduceMean", X4, [I64(-1)], {}, 18, TensorProto.FLOAT),
    ("reducesum-13", "ReduceSum", X4, [I64(1)], dict(keepdims=0), 13, TensorProto.FLOAT),
    ("reducemax-all", "ReduceMax", X4, [], {}, 13, TensorProto.FLOAT),
    ("slice-13", "Slice", X4, [I64(1, -5), I64(100, -1), I64(1, 2), I64(2, 1)], {}, 13, TensorProto.FLOAT),
    ("slice-9", "Slice", X4, [], dict(starts=[1], ends=[3], axes=[3]), 9, TensorProto.FLOAT),
]


def one_node(op, x, extra, attrs, opset, out_type):
    names, inits = ["x"], []
    for i, v in enumerate(extra):
        if isinstance(v, str):
            names.append("")
        else:
            names.append(f"in{i}")
            inits.append(numpy_helper.from_array(v, f"in{i}"))
    graph = helper.make_graph([helper.make_node(op, names, ["y"], **attrs)], op,
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                              [helper.make_tensor_value_info("y", out_type, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_the_op_gives_onnxruntimes_output(case):
    _, op, x, extra, attrs, opset, out_type = case
    model = one_node(op, x, extra, attrs, opset, out_type)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    module = convert(model)
    with torch.no_grad():
        got = module(torch.from_numpy(x.copy()))
    got = got.exp() if module.log_probs else got
    assert tuple(got.shape) == want.shape
    assert np.allclose(got.numpy(), want, atol=1e-5, rtol=1e-4), float(np.abs(got.numpy() - want).max())
