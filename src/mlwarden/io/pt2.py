"""Loading a `torch.export` archive (`.pt2`) without torch's own loader.

`torch.export.load` unpickles several members with `weights_only=False` (sample inputs when the safe load
fails, weights and constants its config marks "use_pickle", opaque objects, the legacy layouts), loads
AOTInductor shared libraries, and parses the graph's symbolic shapes with sympy's `sympify`, an `eval`.
Any of these runs code from the file. This loader reads the same archive with the rule the scan applies:
the graph JSON through torch's deserializer after its operators and expressions are checked
(`scan.graphs`), weights and constants as raw tensor bytes (a pickled tensor only through torch's
`weights_only` unpickler, and it must be a tensor), no sample inputs, and no member of a kind it does not
know. Whatever it refuses is a one-line error.
"""
from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import torch

from ..core.errors import UserError
from .scan.archives import archive_problems, read_member
from .scan.formats import EXPORT_NATIVE, export_path
from .scan.graphs import export_graph_refs

_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.\-]+")
_MODEL = "model"


class _Archive:
    """The members of one archive by their path below its root folder, read from bytes held in memory (the
    scan and this loader see the same bytes even if the file changes on disk)."""

    def __init__(self, path: Path, raw: bytes):
        self.path = path
        try:
            self.zf = zipfile.ZipFile(io.BytesIO(raw))
        except (zipfile.BadZipFile, ValueError) as e:
            raise self.error(f"not a zip archive ({e})") from None
        problems = archive_problems(self.zf)
        if problems:
            raise self.error(problems[0])
        roots = {n.split("/", 1)[0] for n in self.zf.namelist() if "/" in n}
        if len(roots) != 1:
            raise self.error("not a torch.export archive (members under one root folder expected)")
        self.names = {export_path(n): n for n in self.zf.namelist() if not n.endswith("/")}

    def error(self, why: str) -> UserError:
        return UserError(f"{self.path}: {why}; nothing was loaded")

    def read(self, rel: str) -> bytes:
        if rel not in self.names:
            raise self.error(f"member {rel!r} is missing")
        return read_member(self.zf, self.names[rel])

    def json(self, rel: str):
        try:
            return json.loads(self.read(rel))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            raise self.error(f"member {rel!r} is not readable JSON") from None


class ExportedModule(torch.nn.Module):
    """An exported program as an ordinary `nn.Module`. The graph was traced in one mode, so it has none to
    switch: torch's module refuses `eval()` and `train()`, which every attack and defence calls; here they
    only set the flag. Gradients, devices and parameters reach the graph as usual."""

    def __init__(self, program: torch.nn.Module):
        super().__init__()
        self.program = program

    def forward(self, *args, **kwargs):
        return self.program(*args, **kwargs)

    def train(self, mode: bool = True) -> "ExportedModule":
        self.training = mode
        return self


def load_exported(path: Path, raw: bytes, trust: frozenset[str] = frozenset()) -> torch.nn.Module:
    """The archive's model as an `nn.Module` (an ExportedModule around torch's GraphModule), loaded from
    `raw`, the file's bytes."""
    from torch._export.serde import schema
    from torch._export.serde.serialize import ExportedProgramDeserializer, _dict_to_dataclass
    from torch.export.pt2_archive.constants import ARCHIVE_VERSION_VALUE

    a = _Archive(path, raw)
    for rel in a.names:
        if rel.startswith(EXPORT_NATIVE):
            raise a.error(f"holds compiled native code ({rel}), which mlwarden never loads")
    if a.read("archive_format").strip() != b"pt2":
        raise a.error("not a pt2 archive (archive_format)")
    if a.read("archive_version").strip() != ARCHIVE_VERSION_VALUE.encode():
        raise a.error("an older or newer archive layout than this torch reads safely; save it again with "
                      "torch.export.save")
    graph = a.json(f"models/{_MODEL}.json")
    refs, problems = export_graph_refs(graph, f"models/{_MODEL}.json")
    if problems:
        raise a.error(problems[0])
    refused = [n for n, kind, _ in refs if n not in trust]
    if refused:
        raise a.error(f"the graph calls {', '.join(refused[:4])}, outside the operators mlwarden accepts")
    state_dict = _payloads(a, "weights", params=True)
    constants = _payloads(a, "constants", params=False)
    try:
        program = _dict_to_dataclass(schema.ExportedProgram, graph)
        ep = ExportedProgramDeserializer().deserialize(program, state_dict, constants, None)
        return ExportedModule(ep.module())
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure means an archive we cannot read
        raise a.error(f"not a readable torch.export program ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
                      if str(e).strip() else f"not a readable torch.export program ({type(e).__name__})") from None


def _payloads(a: _Archive, kind: str, params: bool) -> dict[str, torch.Tensor]:
    """Weights or constants as the config describes them: raw bytes viewed with the recorded dtype, shape
    and strides (torch checks that the view stays inside the bytes), or a tensor pickled for torch's
    `weights_only` unpickler. Custom and opaque objects are refused: torch unpickles them unrestricted."""
    from torch._export.serde import schema
    from torch._export.serde.serialize import (
        _dict_to_dataclass,
        deserialize_scalar_type,
        deserialize_size,
        deserialize_storage_offset,
        deserialize_stride,
    )
    folder = f"data/{kind}/"
    if f"{folder}{_MODEL}.pt" in a.names:
        raise a.error(f"the legacy {kind} layout, which torch unpickles unrestricted; save it again with "
                      "torch.export.save")
    config_name = f"{folder}{_MODEL}_{kind}_config.json"
    if config_name not in a.names:
        return {}
    try:
        config = _dict_to_dataclass(schema.PayloadConfig, a.json(config_name)).config
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - a config that does not fit the schema
        raise a.error(f"{config_name} does not describe {kind} ({type(e).__name__})") from None
    flat: dict[str, torch.Tensor] = {}
    out: dict[str, torch.Tensor] = {}
    for fqn, meta in config.items():
        name = meta.path_name
        if not isinstance(name, str) or not _PLAIN_NAME.fullmatch(name) or name.startswith("."):
            raise a.error(f"{config_name}: payload path {str(name)[:60]!r} is not a plain member name")
        if kind == "constants" and not name.startswith("tensor_"):
            raise a.error(f"constant {fqn!r} is a custom or opaque object ({name}), which torch unpickles "
                          "unrestricted; mlwarden loads tensors only")
        try:
            if meta.use_pickle:
                t = torch.load(io.BytesIO(a.read(folder + name)), map_location="cpu", weights_only=True)
                if not isinstance(t, torch.Tensor):
                    raise a.error(f"pickled {kind[:-1]} {fqn!r} is a {type(t).__name__}, not a tensor")
            else:
                tm = meta.tensor_meta
                if tm is None:
                    raise a.error(f"{kind[:-1]} {fqn!r} has no tensor description")
                dtype = deserialize_scalar_type(tm.dtype)
                if name not in flat:
                    data = a.read(folder + name)
                    size = torch.empty((), dtype=dtype).element_size()
                    if len(data) % size:
                        raise a.error(f"{kind[:-1]} {name!r}: {len(data)} bytes is no whole number of {dtype}")
                    flat[name] = (torch.frombuffer(bytearray(data), dtype=dtype) if data
                                  else torch.empty(0, dtype=dtype))
                base = flat[name]
                if base.dtype != dtype:
                    raise a.error(f"{kind[:-1]} {fqn!r} reads {name!r} as two dtypes")
                shape = deserialize_size(tm.sizes)
                t = (torch.zeros(shape, dtype=dtype) if base.numel() == 0 else
                     torch.as_strided(base, shape, deserialize_stride(tm.strides),
                                      deserialize_storage_offset(tm.storage_offset)))
                if params and meta.is_param:
                    t = torch.nn.Parameter(t, requires_grad=bool(tm.requires_grad))
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - a view outside its bytes, a dtype torch does not know
            raise a.error(f"{kind[:-1]} {fqn!r} unreadable ({type(e).__name__}: "
                          f"{(str(e).splitlines() or [''])[0][:120]})") from None
        out[fqn] = t
    return out
