"""One reader per model format. Each lists what loading the file would import, construct or call, and
what is structurally wrong with it; none of them loads the model or imports a name it reads."""
from __future__ import annotations

import io
import json
import os
import re
import struct
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from .archives import archive_problems, read_member
from .graphs import export_graph_refs, torchscript_refs
from .pickles import looks_like_pickle, scan_pickle_bytes, scan_pickle_prefix

# (name, kind, where) triples; kind: type | type-value | function | operator | file-operator | import
Refs = list[tuple[str, str, str]]

ONNX_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "ai.onnx.preview.training"}
SKOPS_FUNCTION_LOADERS = {"FunctionNode", "MethodNode", "PartialNode", "OperatorFuncNode"}
SKOPS_DATA_LOADERS = {"DictNode", "ListNode", "TupleNode", "SetNode", "JsonNode", "NdArrayNode", "DTypeNode",
                      "SparseMatrixNode", "BytesNode", "BytearrayNode", "SliceNode", "ObjectNode", "ReduceNode",
                      "RandomStateNode", "RandomGeneratorNode", "BitGeneratorNode", "DefaultDictNode",
                      "SGDNode", "TreeNode", "LossNode", "KNNNode", "MaskedArrayNode", "CompositeKernelNode"}


# An XGBoost model's top-level object opens with its "learner" key, in JSON or in UBJSON (the key's length
# under any of UBJSON's integer markers); a LightGBM text model opens with "tree" and its version line.
_XGB_JSON = re.compile(rb'\s*\{\s*"learner"\s*:')
_XGB_UBJ = re.compile(rb"\{(?:[iU]\x07|I\x00\x07|l\x00{3}\x07|L\x00{7}\x07)learner")
_LGB_TEXT = re.compile(rb"tree\r?\nversion=v\d")
# CatBoost: its binary opens with "CBM1"; its JSON export (keys sorted) with "features_info" (or "ctr_data")
_CATBOOST_JSON = re.compile(rb'\s*\{\s*"(?:features_info|ctr_data)"\s*:')


def booster_kind(head: bytes) -> str | None:
    """The library ("xgboost", "lightgbm", "catboost") whose model format a file's first bytes open, else None.
    These hold trees and numbers only, parsed by the library's own reader: nothing in them is imported,
    constructed or called."""
    if _XGB_JSON.match(head) or _XGB_UBJ.match(head):
        return "xgboost"
    if _LGB_TEXT.match(head):
        return "lightgbm"
    if head.startswith(b"CBM1") or _CATBOOST_JSON.match(head):
        return "catboost"   # read by io/catboost_files.py: checked in Python, the binary in a child process
    return None


def zip_kind(zf: zipfile.ZipFile) -> str:
    names = [n.lower() for n in zf.namelist()]
    if "schema.json" in names:
        return "skops"
    if any(re.search(r"(^|/)models/[^/]+\.json$", n) for n in names) and any(n.endswith("archive_format")
                                                                            for n in names):
        return "export"
    if any("/code/" in n or n.startswith("code/") for n in names) or any(n.endswith("constants.pkl") for n in names):
        return "torchscript"
    if any(n.endswith("data.pkl") for n in names):
        return "torch"
    if names and all(n.endswith(".npy") for n in names):
        return "npz"
    return "zip"


def scan_zip(zf: zipfile.ZipFile, kind: str, depth: int = 0) -> tuple[Refs, list[str]]:
    problems = archive_problems(zf)
    if problems:
        return [], problems   # nothing is read from an archive that fails the size checks
    refs: Refs = []
    if kind == "skops":  # a skops archive holds schema.json and .npy arrays; anything pickled is read too
        refs, problems = _skops(zf)
    for info in zf.infolist():
        if info.is_dir() or info.file_size == 0:
            continue
        try:
            r, p = _scan_member(zf, info, kind, depth)
        except (zipfile.BadZipFile, RuntimeError, NotImplementedError, ValueError, EOFError, OSError,
                zlib.error) as e:   # encrypted, unknown compression, corrupt, oversized: never loaded either
            r, p = [], [f"member {info.filename!r} unreadable ({type(e).__name__}: {str(e)[:80]})"]
        refs += r
        problems += p
    return refs, problems


# Members of a `.pt2` archive that hold compiled native code (AOTInductor shared libraries and kernels,
# ExecuTorch and MTIA programs): torch.export.load would load them into the process.
EXPORT_NATIVE = ("data/aotinductor/", "data/executorch/", "data/mtia/")
# Constants torch unpickles whatever they hold (torchbind objects, opaque Python objects).
EXPORT_PICKLED_CONSTANTS = ("data/constants/custom_obj_", "data/constants/opaque_obj_")


def export_path(name: str) -> str:
    """A `.pt2` member's path below the archive's root folder (torch's reader drops the first part)."""
    return name.split("/", 1)[1] if "/" in name else name


def _scan_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, kind: str, depth: int) -> tuple[Refs, list[str]]:
    """One member. Names compare in lower case: torch's archive reader finds members case-insensitively.
    A member no reader claims is still read as an unpickler would read it (any protocol, up to the first byte
    that does not parse): whether a loader unpickles it is decided by other members (a `.pt2` config marks
    weights "use_pickle"), so the scan never trusts a name or a first byte to say a member holds no pickle."""
    name, low = info.filename, info.filename.lower()
    if kind == "torchscript" and low.endswith(".py") and "/code/" in f"/{low}":
        return torchscript_refs(read_member(zf, name).decode("utf-8", "replace"), name)
    problems: list[str] = []
    if kind == "export":
        rel = export_path(low)
        if re.fullmatch(r"models/[^/]+\.json", rel):
            try:
                graph = json.loads(read_member(zf, name))
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
                return [], [f"{name}: graph is not readable JSON"]
            return export_graph_refs(graph, name)
        if rel.startswith(EXPORT_NATIVE):
            return [], [f"{name}: compiled native code (AOTInductor / ExecuTorch), which loading would run"]
        if rel.startswith(EXPORT_PICKLED_CONSTANTS):
            problems.append(f"{name}: a custom or opaque object, which torch.export.load unpickles")
    if (kind in ("npz", "skops") and low.endswith(".npy")) or low == "schema.json":
        return [], []   # .npy members are read with allow_pickle=False
    with zf.open(info) as f:
        peek = f.read(4)
    if peek == b"PK\x03\x04":   # an archive inside the archive (.pt2 sample inputs, legacy weights)
        if depth >= 2:
            return [], problems + [f"{name}: archives nested more than two deep"]
        inner = zipfile.ZipFile(io.BytesIO(read_member(zf, name)))
        r, p = scan_zip(inner, zip_kind(inner), depth + 1)
        return [(n, k, f"{name}/{w}") for n, k, w in r], problems + [f"{name}: {x}" for x in p]
    if low.endswith("pkl") or looks_like_pickle(peek):
        ps = scan_pickle_bytes(read_member(zf, name))
    else:
        with zf.open(info) as f:
            ps = scan_pickle_prefix(f, info.file_size)
    return [(n, "import", name) for n in ps.imports], problems + [f"{name}: {x}" for x in ps.problems]


def _skops(zf: zipfile.ZipFile) -> tuple[Refs, list[str]]:
    try:
        schema = json.loads(read_member(zf, "schema.json", 256 << 20))
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError, RecursionError) as e:
        return [], [f"schema.json unreadable: {type(e).__name__}: {str(e)[:120]}"]
    refs: Refs = []
    problems: list[str] = []

    def walk(node, where):
        if isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, where)
            return
        if not isinstance(node, dict):
            return
        if "__module__" in node and "__class__" in node:
            name = f"{node['__module__']}.{node['__class__']}"
            loader = node.get("__loader__", "")
            if loader in SKOPS_FUNCTION_LOADERS:
                kind = "function"
            elif loader == "TypeNode":
                kind = "type-value"
            elif loader in SKOPS_DATA_LOADERS:
                kind = "type"
            else:
                kind = "function"
                problems.append(f"unknown skops node {loader!r} for {name}")
            if loader != "JsonNode":
                refs.append((name, kind, where))
        for k, v in node.items():
            if k not in ("__module__", "__class__", "__loader__", "__id__"):
                walk(v, where)
    try:
        walk(schema, "schema.json")
    except RecursionError:
        problems.append("schema.json is nested too deeply to check")
    return refs, problems


SAFETENSORS_DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
                      "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8}


def scan_safetensors(path: Path) -> list[str]:
    """The header must be a JSON object of tensors whose dtype, shape and offsets agree and stay in the file."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return ["shorter than a safetensors header"]
        n = struct.unpack("<Q", head)[0]
        if n > min(100 << 20, size - 8):
            return [f"header claims {n} bytes in a {size}-byte file"]
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            return ["header is not JSON"]
    if not isinstance(header, dict):
        return ["header is not a JSON object"]
    body = size - 8 - n
    for key, t in header.items():
        if key == "__metadata__":
            continue
        if not isinstance(t, dict):
            return [f"tensor {key!r} is not described by an object"]
        offs, shape, dtype = t.get("data_offsets"), t.get("shape"), t.get("dtype")
        if not (isinstance(offs, list) and len(offs) == 2 and all(type(o) is int for o in offs)
                and 0 <= offs[0] <= offs[1] <= body):
            return [f"tensor {key!r} points outside the file"]
        if dtype not in SAFETENSORS_DTYPES:
            return [f"tensor {key!r} has unknown dtype {str(dtype)[:20]!r}"]
        if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
            return [f"tensor {key!r} has a malformed shape"]
        count = 1
        for d in shape:
            count *= d
        if count * SAFETENSORS_DTYPES[dtype] != offs[1] - offs[0]:
            return [f"tensor {key!r}: shape and dtype do not match its {offs[1] - offs[0]} bytes"]
    return []


def onnx_tensors(model, operator=None):
    """Every tensor an ONNX model holds: initializers, sparse ones, node attributes, subgraphs and the model's
    functions. `operator(node, where)` is called for every node on the way."""

    def node_tensors(nodes, where):
        for node in nodes:
            if operator is not None:
                operator(node, where)
            for a in node.attribute:
                if a.HasField("t"):
                    yield a.t
                yield from a.tensors
                if a.HasField("sparse_tensor"):
                    yield from (a.sparse_tensor.values, a.sparse_tensor.indices)
                for sp in a.sparse_tensors:
                    yield from (sp.values, sp.indices)
                if a.HasField("g"):
                    yield from tensors(a.g)
                for g in a.graphs:
                    yield from tensors(g)

    def tensors(graph):
        yield from graph.initializer
        for sp in graph.sparse_initializer:
            yield from (sp.values, sp.indices)
        yield from node_tensors(graph.node, graph.name or "graph")

    yield from tensors(model.graph)
    for fn in model.functions:
        yield from node_tensors(fn.node, fn.name)


def onnx_external_keys(t) -> dict[str, str]:
    """A tensor's external_data entries (ONNX IR spec: location, offset, length, checksum) as one mapping;
    ValueError when a key is given twice: readers disagree on which copy counts (onnx's ExternalDataInfo
    keeps the last; a reader keeping the first would check one location while another is read)."""
    keys: dict[str, str] = {}
    for e in t.external_data:
        if e.key in keys:
            raise ValueError(f"tensor {t.name!r} gives its external-data key {e.key!r} twice")
        keys[e.key] = e.value
    return keys


def scan_onnx(path: Path) -> tuple[Refs, list[str]]:
    """External-data paths must stay inside the model's folder; operators outside the standard domains
    are listed (onnxruntime runs them only from a library the user registers)."""
    try:
        import onnx
    except ImportError:
        return [], ["reading ONNX files needs the 'onnx' extra: pip install 'mlwarden[onnx]'"]
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - any parse failure is an unreadable file
        return [], [f"not a readable ONNX model ({type(e).__name__})"]
    except RecursionError:
        return [], ["ONNX model nested too deeply to check"]
    folder = Path(os.path.realpath(path.parent))
    refs: Refs = []
    problems: list[str] = []

    def operator(node, where):
        if node.domain not in ONNX_DOMAINS | local:
            refs.append((f"{node.domain}.{node.op_type}", "operator", where))

    local = {fn.domain for fn in model.functions}   # calls of the model's own functions
    for t in onnx_tensors(model, operator):
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        try:
            loc = onnx_external_keys(t).get("location", "")
        except ValueError as e:
            problems.append(str(e))
            continue
        where = os.path.realpath(folder / loc)
        if (not loc or PurePosixPath(loc).is_absolute() or os.path.isabs(loc) or ".." in PurePosixPath(loc).parts
                or os.path.commonpath([where, str(folder)]) != str(folder)):
            problems.append(f"tensor {t.name!r} reads external data from {loc!r}, outside the model's folder")
    return refs, problems
