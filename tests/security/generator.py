"""The hostile corpus as a generator of classes, not a list of files: for each format, every place a payload
can hide (`PLACES`), each filled with every spelling of the payload (`SPELLINGS` for pickles, `TS_SPELLINGS`
for TorchScript calls, `EXPR_SPELLINGS` for symbolic shapes). A new place or spelling multiplies into every
format that has it. Every payload only writes a sentinel file (or starts `touch`), so a test sees whether
any code from a file ran; trees that crash or hang the process are in `tree_files`.

Places come from reading the loaders: what `torch.export.load`, `torch.jit.load`, `torch.load`, joblib,
pickle and scikit-learn's compiled trees would read, unpickle, parse or index on load and on predict."""
from __future__ import annotations

import io
import json
import os
import pickle
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

from .corpus import _code, _Reduce, _torchscript_from_file


def _str(s: str) -> bytes:
    return b"X" + struct.pack("<I", len(s.encode())) + s.encode()


# Pickle spellings of "run this": every protocol pickle writes, the opcodes no library emits (INST, OBJ),
# names spelled through the memo, and a payload that never reaches STOP (an unpickler runs each opcode as
# it reads it, so what follows the call does not matter).
def _p(protocol: int) -> Callable[[Path, str], bytes]:
    import builtins
    return lambda s, tag: pickle.dumps(_Reduce(builtins.exec, _code(s, tag)), protocol=protocol)


SPELLINGS: dict[str, Callable[[Path, str], bytes]] = {
    "p0": _p(0), "p1": _p(1), "p2": _p(2), "p4": _p(4), "p5": _p(5),
    "system": lambda s, tag: pickle.dumps(_Reduce(os.system, f"touch {s / tag}"), protocol=2),
    "inst": lambda s, tag: b"(" + b"S" + repr(_code(s, tag)).encode() + b"\nibuiltins\nexec\n.",
    "obj": lambda s, tag: b"(cbuiltins\nexec\n" + _str(_code(s, tag)) + b"o.",
    "memo-stack-global": lambda s, tag: (b"\x80\x04\x8c\x08builtins\x94\x8c\x04exec\x94\x93\x94"
                                         + b"\x8c" + bytes([len(_code(s, tag))]) + _code(s, tag).encode()
                                         + b"\x85R."),
    "no-stop": lambda s, tag: b"\x80\x02cbuiltins\nexec\n" + _str(_code(s, tag)) + b"\x85R\xff\xfe garbage",
}


def _torch_zip(payload: bytes) -> bytes:
    """A torch.save archive whose data.pkl is `payload`."""
    import torch
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buf)
    return _rewrite_bytes(buf.getvalue(), lambda n, d: payload if n.endswith("data.pkl") else d)


def _rewrite_bytes(raw: bytes, edit, add: dict[str, bytes] | None = None, drop=lambda n: False) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(raw)) as a, zipfile.ZipFile(out, "w") as b:
        root = a.namelist()[0].split("/", 1)[0]
        for info in a.infolist():
            if not drop(info.filename):
                b.writestr(info, edit(info.filename, a.read(info.filename)))
        for name, data in (add or {}).items():
            b.writestr(f"{root}/{name}", data)
    return out.getvalue()


def _exported_bytes(dynamic: bool = True) -> bytes:
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(64, 10)

        def forward(self, x):
            return self.fc(x.reshape(x.shape[0], -1))

    shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
    ep = torch.export.export(Net(), (torch.zeros(2, 1, 8, 8),), dynamic_shapes=shapes)
    buf = io.BytesIO()
    torch.export.save(ep, buf)
    return buf.getvalue()


def _config_edit(name_end: str, fn):
    def edit(n, d):
        return json.dumps(fn(json.loads(d))).encode() if n.endswith(name_end) else d
    return edit


def _pt2_places(base: bytes) -> dict[str, Callable[[bytes], bytes]]:
    """Where a .pt2 archive can hand torch a pickle: each takes the payload's bytes and gives the archive."""
    def sample_inputs(p):
        return _rewrite_bytes(base, lambda n, d: p if n.endswith("sample_inputs/model.pt") else d)

    def sample_inputs_zip(p):
        return _rewrite_bytes(base, lambda n, d: _torch_zip(p) if n.endswith("sample_inputs/model.pt") else d)

    def pickled_weight(p):
        def cfg(c):
            c["config"]["fc.weight"]["use_pickle"] = True
            return c
        edit = _config_edit("model_weights_config.json", cfg)
        return _rewrite_bytes(base, lambda n, d: p if n.endswith("data/weights/weight_0") else edit(n, d))

    def pickled_constant(p):
        meta = {"path_name": "tensor_0", "is_param": False, "use_pickle": True, "tensor_meta": None}
        edit = _config_edit("model_constants_config.json", lambda c: {"config": {**c["config"], "c0": meta}})
        return _rewrite_bytes(base, edit, add={"data/constants/tensor_0": p})

    def opaque_constant(p):
        meta = {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True, "tensor_meta": None}
        edit = _config_edit("model_constants_config.json", lambda c: {"config": {**c["config"], "c0": meta}})
        return _rewrite_bytes(base, edit, add={"data/constants/opaque_obj_0": p})

    def legacy_weights(p):
        return _rewrite_bytes(base, lambda n, d: d, add={"data/weights/model.pt": _torch_zip(p)},
                              drop=lambda n: n.endswith("model_weights_config.json"))

    def unreferenced_member(p):
        return _rewrite_bytes(base, lambda n, d: d, add={"data/extra_payload": p})

    return {"sample-inputs": sample_inputs, "sample-inputs-zip": sample_inputs_zip,
            "pickled-weight": pickled_weight, "pickled-constant": pickled_constant,
            "opaque-constant": opaque_constant, "legacy-weights": legacy_weights,
            "unreferenced-member": unreferenced_member}


def _legacy_layout(p: bytes) -> bytes:
    """torch.export's older archive layout (top-level serialized_* members), tried when the new one fails."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("version", "8.13")
        z.writestr("serialized_exported_program.json", "{}")
        z.writestr("serialized_state_dict.pt", _torch_zip(p))
        z.writestr("serialized_constants.pt", p)
        z.writestr("serialized_example_inputs.pt", p)
    return out.getvalue()


# TorchScript: the same file operator spelled as the parser reads it, not as text matching sees it.
TS_SPELLINGS = {
    "plain": "torch.from_file(",
    "spaces": "torch . from_file (",
    "newline-before-paren": "torch.from_file\n        (",
    "newline-after-dot": "torch.\\\n        from_file(",
    "comment-inside": "torch.   # harmless\n        from_file(",
    "ops-aten": "ops.aten.from_file(",
    "torch-ops": "torch.ops.aten.from_file(",
    "tabs": "torch\t.\tfrom_file\t(",
}

# Symbolic-shape strings that sympify would evaluate as Python.
EXPR_SPELLINGS = {
    "import-in-kwarg": "Symbol('s77', positive=True, integer=__import__('os').system('touch {t}')==0)",
    "exec-call": "exec(\"open('{t}','w')\") or Symbol('s77', positive=True, integer=True)",
    "dunder-chain": "Symbol.__init__.__globals__['__builtins__']['exec'](\"open('{t}','w')\")",
    "lambda": "(lambda: __import__('os').system('touch {t}'))() or Symbol('s77')",
    "power-tower": "Symbol('s77', positive=True, integer=True) + 9**9**9**9",
    "paren-tower": "Symbol('s77', positive=True, integer=True) + ((((999999999999)**64)**64)**64)**64",
}


def hostile_files(folder: Path, sentinel: Path) -> dict[str, Path]:
    """Every place x every spelling, for pickles, joblib, torch archives, .pt2 archives, TorchScript code,
    exported graphs and symbolic shapes. name -> path."""
    import torch
    folder.mkdir(parents=True, exist_ok=True)
    sentinel.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}

    def put(name: str, data: bytes) -> None:
        (folder / name).write_bytes(data)
        out[name] = folder / name

    base = _exported_bytes()
    places = _pt2_places(base)
    magic = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
    for sp, make in SPELLINGS.items():   # each file's payload writes a sentinel named like the file
        put(f"gen-{sp}.pkl", make(sentinel, f"gen-{sp}.pkl"))
        put(f"gen-{sp}-torch-data-pkl.pt", _torch_zip(make(sentinel, f"gen-{sp}-torch-data-pkl.pt")))
        put(f"gen-{sp}-legacy-torch.pt", magic + make(sentinel, f"gen-{sp}-legacy-torch.pt"))
        put(f"gen-{sp}-legacy-layout.pt2", _legacy_layout(make(sentinel, f"gen-{sp}-legacy-layout.pt2")))
        for place, build in places.items():
            put(f"gen-{sp}-{place}.pt2", build(make(sentinel, f"gen-{sp}-{place}.pt2")))
    # joblib keeps numpy arrays raw inside the pickle stream: a payload after an array (a static walk stops at
    # the array bytes) and one inside an array of Python objects (joblib unpickles it separately)
    import builtins

    import joblib
    import numpy as np
    for name, obj in {"after-array": {"w": np.zeros(64), "x": _Reduce(builtins.exec, _code(sentinel, "gen-joblib-after-array.joblib"))},
                      "object-array": {"w": np.zeros(64), "x": np.array([_Reduce(builtins.exec, _code(
                          sentinel, "gen-joblib-object-array.joblib"))], dtype=object)}}.items():
        joblib.dump(obj, folder / f"gen-joblib-{name}.joblib")
        out[f"gen-joblib-{name}.joblib"] = folder / f"gen-joblib-{name}.joblib"
    put("gen-unbacked-counter.pt2", _rewrite_bytes(base, _config_edit("models/model.json", lambda g: {
        **g, "range_constraints": {**g.get("range_constraints", {}), "u99999999999999": {"min_val": 0, "max_val": 9}}})))
    # 115 bytes of trusted-looking names that never finish, and bytes from a size instead of data
    put("gen-deque-range.pkl", b"\x80\x02ccollections\ndeque\ncbuiltins\nrange\n\x8a\x08\x00\x00d\xa7\xb3\xb6\xe0\r"
                               b"\x85RK\x00\x86R.")
    put("gen-bytes-from-size.pkl", b"\x80\x02cbuiltins\nbytes\n\x8a\x05\x00\xf2\x05*\x01\x85R.")
    put("gen-aotinductor.pt2", _rewrite_bytes(base, lambda n, d: d,
                                              add={"data/aotinductor/model/model.so": b"\x7fELF" + bytes(64)}))
    for name, expr in EXPR_SPELLINGS.items():
        bad = expr.replace("{t}", str(sentinel / f"gen-expr-{name}.pt2"))
        put(f"gen-expr-{name}.pt2", _rewrite_bytes(base, lambda n, d, bad=bad: d.replace(
            b"Symbol('s77', positive=True, integer=True)", bad.encode()) if n.endswith("models/model.json") else d))
    for name, target in {"from-file": "torch.ops.aten.from_file.default", "save": "torch.ops.aten.save.default",
                         "getattr-gadget": "_operator.__loader__.get_data", "custom-ns": "torch.ops.evil.run.default",
                         "torchbind": "torch.ops.higher_order.call_torchbind",
                         "overload-attr": "torch.ops.aten.linear._op",
                         "unchecked-sparse": "torch.ops.aten._sparse_coo_tensor_with_dims_and_tensors.default",
                         "unsafe-index": "torch.ops.aten._unsafe_index.Tensor"}.items():
        put(f"gen-target-{name}.pt2", _rewrite_bytes(base, lambda n, d, t=target: d.replace(
            b"torch.ops.aten.linear.default", t.encode()) if n.endswith("models/model.json") else d))
    # TorchScript: a module whose forward memory-maps a file, respelled
    for name, spelling in TS_SPELLINGS.items():
        ts = _torchscript_from_file(sentinel / f"gen-ts-{name}.pt")
        put(f"gen-ts-{name}.pt", _rewrite_bytes(ts, lambda n, d, s=spelling: d.replace(
            b"torch.from_file(", s.encode()) if n.endswith(".py") else d))
    put("gen-ts-save.pt", _torchscript_save(sentinel / "gen-ts-save.pt"))
    ts = _torchscript_from_file(sentinel / "gen-ts-unchecked.pt")   # an unchecked operator, as a method
    put("gen-ts-unchecked-method.pt", _rewrite_bytes(ts, lambda n, d: d.replace(
        b"torch.from_file(", b"torch.zeros(1)._coalesced_(True).new_empty(") if n.endswith(".py") else d))
    del torch
    return out


def _torchscript_save(path: Path) -> bytes:
    import torch

    class Save(torch.nn.Module):
        def __init__(self, p: str):
            super().__init__()
            self.fc = torch.nn.Linear(64, 10)
            self.p = p

        def forward(self, x):
            y = self.fc(x.reshape(x.shape[0], -1))
            torch . save(y, self.p)   # noqa: E211 - the spelling under test
            return y

    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(Save(str(path))), buf)
    return buf.getvalue()


def tree_files(folder: Path) -> dict[str, Path]:
    """scikit-learn models whose arrays a file can forge: out-of-range children and features, a node that is
    its own child, a depth that lies, in a tree, a forest, a boosted model and a neighbour index; each as
    a pickle and (where skops can write it) as skops."""
    import warnings

    import numpy as np
    import skops.io as sio
    from sklearn.datasets import load_digits
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.tree import DecisionTreeClassifier
    from sklearn.tree._tree import Tree
    folder.mkdir(parents=True, exist_ok=True)
    x, y = load_digits(return_X_y=True)
    x, y = x[:300], y[:300]

    def forged(tree, edit):
        st = tree.__getstate__()
        st = {**st, "nodes": st["nodes"].copy()}
        edit(st)
        t = Tree(tree.n_features, np.asarray(tree.n_classes, dtype=np.intp), tree.n_outputs)
        t.__setstate__(st)
        return t

    edits = {
        "child-out-of-range": lambda st: st["nodes"]["left_child"].__setitem__(0, 10_000_000),
        "feature-out-of-range": lambda st: st["nodes"]["feature"].__setitem__(0, 5_000_000),
        "self-child": lambda st: st["nodes"]["right_child"].__setitem__(0, 0),
        "cycle": lambda st: st["nodes"]["left_child"].__setitem__(1, 0),
        "depth-lie": lambda st: st.__setitem__("max_depth", 0),
    }
    out: dict[str, Path] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, edit in edits.items():
            tree = DecisionTreeClassifier(max_depth=4, random_state=0).fit(x, y)
            tree.tree_ = forged(tree.tree_, edit)
            forest = RandomForestClassifier(3, max_depth=4, random_state=0).fit(x, y)
            forest.estimators_[1].tree_ = forged(forest.estimators_[1].tree_, edit)
            for kind, model in (("tree", tree), ("forest", forest)):
                p = folder / f"{kind}-{name}.pkl"
                p.write_bytes(pickle.dumps(model))
                out[p.name] = p
                p = folder / f"{kind}-{name}.skops"
                sio.dump(model, p)
                out[p.name] = p
        hgb = HistGradientBoostingClassifier(max_iter=2, random_state=0).fit(x, y)
        hgb._predictors[0][0].nodes["feature_idx"][0] = 4_000_000
        hgb._predictors[1][0].nodes["left"][0] = 0
        p = folder / "hist-gb-forged.pkl"
        p.write_bytes(pickle.dumps(hgb))
        out[p.name] = p
        tree = DecisionTreeClassifier(max_depth=4, random_state=0).fit(x, y)
        tree.tree_ = forged(tree.tree_, lambda st: st["nodes"]["feature"].__setitem__(0, 50_000_000))
        del tree.n_features_in_                           # scikit-learn then skips its width check
        p = folder / "tree-no-feature-count.pkl"
        p.write_bytes(pickle.dumps(tree))
        out[p.name] = p
        from sklearn.pipeline import Pipeline
        deep = DecisionTreeClassifier(max_depth=4, random_state=0).fit(x, y)
        deep.tree_ = forged(deep.tree_, edits["child-out-of-range"])
        for _ in range(18):                               # nested past any depth limit
            deep = Pipeline([("m", deep)])
        p = folder / "tree-deep-pipeline.pkl"
        p.write_bytes(pickle.dumps(deep))
        out[p.name] = p
        from sklearn.linear_model import LogisticRegression
        from sklearn.svm import SVC
        lr = LogisticRegression(max_iter=200).fit(x / 16, y).sparsify()
        lr.coef_.indices[0] = 2_000_000_000
        p = folder / "sparse-coef-forged.pkl"
        p.write_bytes(pickle.dumps(lr))
        out[p.name] = p
        svc = SVC().fit(x / 16, y)
        svc._intercept_ = svc._intercept_[:1]
        p = folder / "svc-intercepts-forged.pkl"
        p.write_bytes(pickle.dumps(svc))
        out[p.name] = p
        knn = KNeighborsClassifier(algorithm="kd_tree").fit(x, y)
        st = list(knn._tree.__getstate__())
        st[1] = st[1].copy()
        st[1][0] = 10_000_000
        knn._tree.__setstate__(tuple(st))
        p = folder / "knn-kd-tree-forged.pkl"
        p.write_bytes(pickle.dumps(knn))
        out[p.name] = p
    return out
