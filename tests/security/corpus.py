"""Builds the hostile-file corpus (and clean files of every format) used by the scan tests and by
benchmarks/bench_scan.py. Every payload only creates a sentinel file, so a test can see whether any
code from a file ran."""
from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np


def _code(sentinel: Path, tag: str) -> str:
    return f"open({str(sentinel / tag)!r}, 'w').write('pwned')"


class _Reduce:
    """Pickles as `fn(*args)`: what every pickle payload boils down to."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


class CallableReduce(_Reduce):
    """Pickles as `fn(*args)` and can stand where a pickle expects a callable: `fn(*args)(...)`."""

    def __call__(self, *a):
        return None


def _global_call(module: str, name: str, arg: str, protocol: int = 2) -> bytes:
    """A hand-written pickle calling module.name(arg), the way a payload that no library would emit looks."""
    if protocol >= 4:  # STACK_GLOBAL from memoized strings, as modern pickles spell imports
        def s(x):
            b = x.encode()
            return b"\x8c" + bytes([len(b)]) + b + b"\x94"
        body = s(module) + s(name) + b"\x93\x94" + s(arg) if len(arg) < 256 else None
        return b"\x80\x04" + body + b"\x85R." if body else b""
    return (b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n" + b"X" + struct.pack("<I", len(arg))
            + arg.encode() + b"\x85R.")


def hostile_files(folder: Path, sentinel: Path) -> dict[str, Path]:
    """name -> path of every hostile file; `sentinel` is the folder payloads would write into."""
    import skops.io as sio
    import torch
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer
    folder.mkdir(parents=True, exist_ok=True)
    sentinel.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}

    def put(name: str, data: bytes) -> None:
        (folder / name).write_bytes(data)
        out[name] = folder / name

    # skops: the reported exploit, a chain of function references ending in builtins.exec
    import builtins
    chain = Pipeline([("a", FunctionTransformer(np.full_like, kw_args={"fill_value": _code(sentinel, "skops"),
                                                                      "dtype": object})),
                      ("b", FunctionTransformer(np.ravel)), ("c", FunctionTransformer(builtins.exec))])
    sio.dump(chain, folder / "skops-exec-chain.skops")
    out["skops-exec-chain.skops"] = folder / "skops-exec-chain.skops"
    sio.dump(FunctionTransformer(os.system), folder / "skops-os-system.skops")
    out["skops-os-system.skops"] = folder / "skops-os-system.skops"
    # plain pickles: the classic payload, and gadgets a deny-list scanner may not know
    put("reduce-os-system.pkl", pickle.dumps(_Reduce(os.system, f"touch {sentinel / 'os'}"), protocol=2))
    put("reduce-exec.pkl", pickle.dumps(_Reduce(builtins.exec, _code(sentinel, "exec")), protocol=4))
    put("stack-global-eval.pkl", _global_call("builtins", "eval", _code(sentinel, "eval"), protocol=4))
    put("gadget-timeit.pkl", _global_call("timeit", "timeit", _code(sentinel, "timeit")))
    put("gadget-cprofile.pkl", _global_call("cProfile", "run", _code(sentinel, "cprofile")))
    put("gadget-doctest.pkl", _global_call("doctest", "debug_script", _code(sentinel, "doctest")))
    put("gadget-idlelib.pkl", _global_call("idlelib.pyshell", "ModifiedInterpreter", "x"))
    # a torch state_dict archive whose data.pkl carries a payload next to real tensors
    buf = io.BytesIO()
    torch.save({"weight": torch.zeros(3), "x": _Reduce(os.system, f"touch {sentinel / 'torch'}")}, buf)
    put("state-dict-payload.pt", buf.getvalue())
    put("legacy-payload.pt", pickle.dumps({"w": _Reduce(builtins.exec, _code(sentinel, "legacy"))}, protocol=2))
    # a torch.export archive whose nested sample-inputs archive carries the payload
    payload = buf.getvalue()
    out["export-payload.pt2"] = _rewrite(_exported(folder), folder / "export-payload.pt2",
                                         lambda name, data: payload if name.endswith("sample_inputs/model.pt") else data)
    # TorchScript calling an operator from a library nobody loaded
    ts = torch.jit.script(torch.nn.Linear(4, 2))
    torch.jit.save(ts, folder / "ts.pt")
    out["torchscript-custom-op.pt"] = _rewrite(
        folder / "ts.pt", folder / "torchscript-custom-op.pt",
        lambda name, data: data.replace(b"torch.linear(", b"ops.evil_lib.run(") if name.endswith(".py") else data)
    # joblib (pickle underneath)
    import joblib
    joblib.dump(_Reduce(os.system, f"touch {sentinel / 'joblib'}"), folder / "payload.joblib")
    out["payload.joblib"] = folder / "payload.joblib"
    # ONNX external data that leaves the model's folder
    outside = sentinel / "secret.bin"
    outside.write_bytes(np.arange(8, dtype=np.float32).tobytes())
    out["onnx-external-traversal.onnx"] = _onnx_external(folder, "onnx-external-traversal.onnx",
                                                         os.path.relpath(outside, folder))
    out["onnx-external-absolute.onnx"] = _onnx_external(folder, "onnx-external-absolute.onnx", str(outside))
    # zip bombs and traversal: size-checked before anything is read
    with zipfile.ZipFile(folder / "bomb.pt", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", pickle.dumps({}, protocol=2))
        with z.open("archive/data/0", "w") as f:
            chunk = bytes(1 << 20)
            for _ in range(64):
                f.write(chunk)
    out["bomb.pt"] = folder / "bomb.pt"
    with zipfile.ZipFile(folder / "traversal.skops", "w") as z:
        z.writestr("schema.json", "{}")
        z.writestr("../../escape.npy", b"")
    out["traversal.skops"] = folder / "traversal.skops"
    header = b'{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,1000000]}}'
    put("lying.safetensors", struct.pack("<Q", len(header)) + header + bytes(16))
    header = b'{"w":{"dtype":"F32","shape":[40],"data_offsets":[0,16]}}'
    put("shape-mismatch.safetensors", struct.pack("<Q", len(header)) + header + bytes(16))
    # found by probing: file operators in graphs, gadgets made of trusted classes, pickles a prefix check
    # misses, polyglots, and ONNX sparse tensors with external data
    out.update(_file_operator_models(folder, sentinel))
    from sklearn.utils.parallel import Parallel
    par = CallableReduce(Parallel, 1, "sequential", "list", 0, None, "2 * n_jobs", "auto", str(sentinel / "par"), 1)
    put("parallel-instance-call.pkl", pickle.dumps(_Reduce(par, [(list, (np.arange(4.0),), {})]), protocol=2))
    put("protocol-0.pkl", pickle.dumps(_Reduce(os.system, f"touch {sentinel / 'p0'}"), protocol=0))
    put("protocol-1.pkl", pickle.dumps(_Reduce(os.system, f"touch {sentinel / 'p1'}"), protocol=1))
    magic = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)          # torch's legacy magic number first
    put("legacy-protocol-0-payload.pt", magic + pickle.dumps(_Reduce(os.system, f"touch {sentinel / 'lp'}"),
                                                             protocol=0))
    z = io.BytesIO()
    with zipfile.ZipFile(z, "w") as zf:
        b = io.BytesIO()
        np.save(b, np.zeros(3))
        zf.writestr("w.npy", b.getvalue())
    put("polyglot-pickle-zip.pt", pickle.dumps(_Reduce(os.system, f"touch {sentinel / 'poly'}"), protocol=2)
        + z.getvalue())
    import zlib
    put("compressed.joblib", zlib.compress(pickle.dumps(_Reduce(os.system, f"touch {sentinel / 'z'}"))))
    out["onnx-sparse-external.onnx"] = _onnx_sparse_external(folder, os.path.relpath(outside, folder))
    put("deep-schema.skops", _zip({"schema.json": b"[" * 100_000}))
    # found by review: member names in another case (torch's reader ignores case), a repeated member name
    # (readers pick different copies), an unreadable nested member, and an operator named through getattr
    evil_ts = out["torchscript-from-file.pt"].read_bytes()
    upper = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(evil_ts)) as a, zipfile.ZipFile(upper, "w") as b:
        for info in a.infolist():
            name = info.filename.replace("/code/", "/CODE/").replace(".py", ".PY")
            b.writestr(name, a.read(info.filename))
    put("torchscript-uppercase-code.pt", upper.getvalue())
    ts = torch.jit.script(torch.nn.Linear(4, 2))
    buf2 = io.BytesIO()
    torch.jit.save(ts, buf2)
    dup = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(buf2.getvalue())) as a, zipfile.ZipFile(dup, "w") as b:
        for info in a.infolist():
            data = a.read(info.filename)
            if info.filename.endswith(".py") and b"torch.linear(" in data:
                b.writestr(info.filename, data.replace(b"torch.linear(", b"ops.evil_lib.run("))
            b.writestr(info.filename, data)
    put("duplicate-member.pt", dup.getvalue())
    put("broken-nested-member.pt2", _zip({"archive_format": b"pt2", "m/models/model.json": b"{}",
                                          "m/data/sample_inputs/model.pt": b"PK\x03\x04" + bytes(64)}))
    out["export-getattr-operator.pt2"] = _rewrite(_exported(folder), folder / "export-getattr-operator.pt2",
                                                  lambda name, data: data.replace(
                                                      b"torch.ops.aten.linear.default", b"_operator.__loader__.get_data")
                                                  if name.endswith("model.json") else data)
    return out


def _exported(folder: Path) -> Path:
    """A clean torch.export archive of a small linear layer, to be rewritten."""
    import torch
    torch.export.save(torch.export.export(torch.nn.Linear(4, 2), (torch.zeros(1, 4),)), folder / "base.pt2")
    return folder / "base.pt2"


def _rewrite(src: Path, dst: Path, edit) -> Path:
    """Copy archive `src` to `dst` member by member through `edit(name, data) -> data`; remove `src`."""
    with zipfile.ZipFile(src) as a, zipfile.ZipFile(dst, "w") as b:
        for info in a.infolist():
            b.writestr(info, edit(info.filename, a.read(info.filename)))
    src.unlink()
    return dst


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _torchscript_from_file(path: Path) -> bytes:
    import torch

    class FromFile(torch.nn.Module):
        def __init__(self, p: str):
            super().__init__()
            self.fc = torch.nn.Linear(64, 10)
            self.p = p

        def forward(self, x):
            t = torch.from_file(self.p, shared=True, size=16, dtype=torch.uint8)
            return self.fc(x.reshape(x.shape[0], -1)) + t.sum().float() * 0

    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(FromFile(str(path))), buf)
    return buf.getvalue()


def _file_operator_models(folder: Path, sentinel: Path) -> dict[str, Path]:
    """TorchScript and torch.export models whose forward memory-maps (and so creates) any file."""
    (folder / "torchscript-from-file.pt").write_bytes(_torchscript_from_file(sentinel / "from_file"))
    _rewrite(_exported(folder), folder / "export-from-file.pt2", lambda name, data: data.replace(
        b"torch.ops.aten.linear.default", b"torch.ops.aten.from_file.default") if name.endswith("model.json") else data)
    return {"torchscript-from-file.pt": folder / "torchscript-from-file.pt",
            "export-from-file.pt2": folder / "export-from-file.pt2"}


def _onnx_sparse_external(folder: Path, location: str) -> Path:
    """A Constant node whose sparse value reads its data from outside the model's folder."""
    import onnx
    from onnx import TensorProto, helper
    values = helper.make_tensor("v", TensorProto.FLOAT, [2], np.zeros(2, np.float32))
    values.ClearField("float_data")
    values.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", "8")):
        e = values.external_data.add()
        e.key, e.value = k, v
    indices = helper.make_tensor("i", TensorProto.INT64, [2], [0, 1])
    sparse = helper.make_sparse_tensor(values, indices, [4])
    node = helper.make_node("Constant", [], ["c"], sparse_value=sparse)
    graph = helper.make_graph([node], "g", [], [helper.make_tensor_value_info("c", TensorProto.FLOAT, [4])])
    path = folder / "onnx-sparse-external.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _onnx_external(folder: Path, name: str, location: str) -> Path:
    import onnx
    from onnx import TensorProto, helper
    w = helper.make_tensor("W", TensorProto.FLOAT, [8, 1], np.zeros(8, np.float32))
    w.ClearField("float_data")
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", "32")):
        e = w.external_data.add()
        e.key, e.value = k, v
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])], [w])
    path = folder / name
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def clean_files(folder: Path) -> dict[str, Path]:
    """One file of every format and several common scikit-learn models: none may be flagged."""
    import warnings

    import skops.io as sio
    import torch
    from safetensors.torch import save_file
    from sklearn.datasets import load_digits
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import MultinomialNB
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeClassifier
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    x, y = load_digits(return_X_y=True)
    x, y = x[:300], y[:300]
    models = {"logreg": LogisticRegression(max_iter=300), "forest": RandomForestClassifier(5, random_state=0),
              "hist-gb": HistGradientBoostingClassifier(max_iter=3), "mlp": MLPClassifier((8,), max_iter=30),
              "svc-pipeline": make_pipeline(StandardScaler(), SVC(probability=True)),
              "tree": DecisionTreeClassifier(max_depth=4)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, m in models.items():
            m.fit(x, y)
            sio.dump(m, folder / f"{name}.skops")
            (folder / f"{name}.pkl").write_bytes(pickle.dumps(m))
            out[f"{name}.skops"], out[f"{name}.pkl"] = folder / f"{name}.skops", folder / f"{name}.pkl"
    text = make_pipeline(TfidfVectorizer(), MultinomialNB()).fit(["free money now", "lunch at noon"] * 3,
                                                                 [1, 0] * 3)
    sio.dump(text, folder / "spam-filter.skops")
    out["spam-filter.skops"] = folder / "spam-filter.skops"
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))
    torch.save(net.state_dict(), folder / "state-dict.pt")
    torch.save(net.state_dict(), folder / "legacy-state-dict.pt", _use_new_zipfile_serialization=False)
    torch.save(net, folder / "pickled-sequential.pt")
    save_file(net.state_dict(), folder / "weights.safetensors")
    torch.jit.save(torch.jit.trace(net.eval(), torch.zeros(2, 1, 8, 8)), folder / "torchscript.pt")
    ep = torch.export.export(net, (torch.zeros(2, 1, 8, 8),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(ep, folder / "exported.pt2")
    for n in ("state-dict.pt", "legacy-state-dict.pt", "pickled-sequential.pt", "weights.safetensors",
              "torchscript.pt", "exported.pt2"):
        out[n] = folder / n
    sub = folder / "onnx"
    sub.mkdir(exist_ok=True)
    (sub / "w.bin").write_bytes(np.zeros(8, np.float32).tobytes())
    out["onnx-external-inside.onnx"] = _onnx_external(sub, "onnx-external-inside.onnx", "w.bin")
    return out
