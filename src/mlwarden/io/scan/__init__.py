"""`mlwarden scan`: what a model file would import, construct or call when loaded, found without loading
it. The same scan runs before every load, so a file that fails it is never opened by its loader.

Supply-chain model corruption: MITRE ATLAS AML.T0010 (ML supply chain compromise) and AML.T0011.000
(unsafe ML artifacts)."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ...core.errors import UserError
from .archives import open_zip
from .formats import booster_kind, scan_onnx, scan_safetensors, scan_zip, zip_kind
from .pickles import scan_pickle_stream
from .trust import classify

JOBLIB_ARRAY = "joblib.numpy_pickle.NumpyArrayWrapper"

UNSAFE = ("untrusted", "dangerous")
# gzip, zlib (joblib's default), bz2, xz/lzma, zstd, lz4 frame
COMPRESSED = (b"\x1f\x8b", b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda", b"BZh", b"\xfd7zXZ", b"\x5d\x00\x00",
              b"\x28\xb5\x2f\xfd", b"\x04\x22\x4d\x18")
# Files a folder scan always reports on (whatever their content), besides zip, pickle, ONNX, safetensors and
# XGBoost / LightGBM files (known by content: a .json or .txt is reported only when it is one).
MODEL_SUFFIXES = {".pkl", ".pickle", ".joblib", ".pt", ".pth", ".ckpt", ".pt2", ".ts", ".onnx", ".skops",
                  ".safetensors", ".npz", ".npy", ".dill", ".model", ".mar", ".h5", ".keras", ".gz", ".xz", ".bz2",
                  ".zst", ".lz4", ".z", ".ubj"}
# TorchScript archives are read by torch's C++ unpickler, which resolves only TorchScript classes.
_TORCHSCRIPT_NAMES = ("__torch__.", "torch.jit._pickle.")


@dataclass
class Reference:
    name: str
    kind: str      # type | type-value | function | import | operator | file-operator
    where: str     # the archive member that holds it
    verdict: str   # trusted | trusted-by-user | untrusted | dangerous


@dataclass
class FileScan:
    path: str
    format: str
    references: list[Reference] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def unsafe(self) -> list[Reference]:
        return [r for r in self.references if r.verdict in UNSAFE]

    @property
    def safe(self) -> bool:
        return not self.problems and not self.unsafe

    def untrusted_names(self) -> list[str]:
        return sorted({r.name for r in self.unsafe})

    def summary(self) -> str:
        if self.safe:
            n = len({r.name for r in self.references})
            return f"safe: {n} distinct reference{'s' * (n != 1)}, all trusted"
        parts = []
        bad = {r.name: r.verdict for r in self.unsafe}
        if bad:
            shown = sorted(bad, key=lambda k: (bad[k] != "dangerous", k))
            parts.append("loading would use " + ", ".join(f"{k} ({bad[k]})" for k in shown[:8])
                         + (f" and {len(shown) - 8} more" if len(shown) > 8 else ""))
        parts += self.problems[:3]
        return "unsafe: " + "; ".join(parts)

    def to_dict(self) -> dict:
        return {**asdict(self), "safe": self.safe, "summary": self.summary()}


def scan_file(path: str | Path, trust: frozenset[str] | set[str] = frozenset()) -> FileScan:
    """Scan one file by its content (not its name). `trust` holds names the user allows knowingly."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"model file not found: {path}")
    t0 = time.monotonic()
    refs: list[tuple[str, str, str]] = []
    problems: list[str] = []
    with open(p, "rb") as f:
        head = f.read(64)
    zf = open_zip(p)
    if zf is not None:
        with zf:
            fmt = zip_kind(zf)
            refs, problems = scan_zip(zf, fmt)
        if head[:4] != b"PK\x03\x04":  # readers that look at the start (torch, pickle) see something else
            problems.insert(0, "data before the zip archive: a polyglot file that other readers load differently")
    elif p.suffix.lower() == ".onnx":
        fmt = "onnx"
        refs, problems = scan_onnx(p)
    elif p.suffix.lower() == ".safetensors":
        fmt = "safetensors"
        problems = scan_safetensors(p)
    elif head.startswith(b"\x93NUMPY"):
        fmt = "npy"
        problems = _npy_problems(p)
    elif head.startswith(COMPRESSED):
        fmt = "compressed"
        problems = ["a compressed file (e.g. joblib with compress=): decompress it and scan the content"]
    elif library := booster_kind(head):
        fmt = library   # trees as JSON, UBJSON or text: no references to judge
    else:
        with open(p, "rb") as f:
            ps = scan_pickle_stream(f, p.stat().st_size)
        if ps.pickles or ps.imports:   # imports before a break still run: an unpickler runs each opcode it reads
            fmt = "pickle"
            imports, problems = ps.imports, ps.problems
            if problems and JOBLIB_ARRAY in imports and not problems[1:]:
                # joblib keeps numpy arrays raw inside the stream: read it as the loader would (trusted
                # names only) instead of walking opcodes that are array bytes
                from ..pickled import joblib_references
                imports, problems = joblib_references(p, frozenset(trust))
            refs = [(n, "import", p.name) for n in imports]
        else:
            fmt = "unknown"
            problems = [("not a model format mlwarden reads (zip archive, pickle, ONNX, safetensors, XGBoost JSON/UBJ, "
                         "LightGBM text or CatBoost .cbm/JSON)")]
    scan = FileScan(str(p), fmt, problems=problems)
    seen = set()
    for name, kind, where in refs:
        if (name, kind) in seen:
            continue
        seen.add((name, kind))
        if fmt == "torchscript" and name.startswith(_TORCHSCRIPT_NAMES):
            verdict = "trusted"
        elif kind == "file-operator":  # reads or writes any file the user can (torch.from_file, aten::save)
            verdict = "trusted-by-user" if name in trust else "dangerous"
        else:
            verdict = classify(name, "function" if kind == "operator" else kind, trust)
        scan.references.append(Reference(name, kind, where, verdict))
    if scan.safe and fmt in ("skops", "pickle"):
        # what names alone cannot show (a forged tree, bytes built from a size): load it as the loader would,
        # trusted names only, and check what it built
        from ..pickled import structure_problems   # imported here to keep the scan's imports light
        scan.problems += structure_problems(p, scan)
    scan.seconds = time.monotonic() - t0
    return scan


def _npy_problems(path: Path) -> list[str]:
    """A .npy array of Python objects is a pickle behind a numpy header."""
    import numpy as np
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            _, _, dtype = read(f)
    except (ValueError, OSError, SyntaxError) as e:
        return [f"unreadable .npy header ({type(e).__name__})"]
    return ["a .npy array of Python objects (pickled)"] if dtype.hasobject else []


class UnsafeModelFile(UserError):
    """A model file whose scan failed: it is not loaded, and the audit reports it as a finding."""

    def __init__(self, scan: FileScan):
        self.scan = scan
        names = scan.untrusted_names()
        how = (f"; pass --trust {','.join(names[:8])} only if you trust the file's author" if names and not
               scan.problems else "")
        super().__init__(f"{scan.path}: {scan.summary()}; nothing was loaded (details: mlwarden scan "
                         f"{scan.path}){how}")
