"""Networks by name for a weights file: `--model w.safetensors --arch resnet18`, no factory needed.

Where the name is built from, first match wins:

1. `torchvision/NAME` or a plain `NAME`, when torchvision is installed: `torchvision.models.get_model(NAME,
   weights=None, num_classes=k)`, its first convolution rebuilt for `c` input channels when `c` is not 3;
2. `timm/NAME` or a plain `NAME` torchvision does not know, when timm is installed:
   `timm.create_model(NAME, pretrained=False, num_classes=k, in_chans=c)`;
3. mlwarden's own definitions (io/archnets.py) of resnet18, resnet34, resnet50, mobilenet_v2, vgg11 and
   vgg16, whose state-dict names and shapes are torchvision's. timm's ResNets use the same names (conv1, bn1,
   layer1.0.conv1, ..., layer2.0.downsample.0, fc), so `timm/resnet18` is read by the same definition.

Weights are never downloaded (`weights=None`, `pretrained=False`). The class count `k` is read from the
state dict's last linear layer (fc.weight's rows for a ResNet) and the input channels `c` from its first
convolution (conv1.weight); both are checked against the data. The file is a safetensors file or a
`torch.save`d state dict (read with `weights_only=True`), a checkpoint holding one under "state_dict" or
"model", with keys prefixed "module." (DataParallel) or "_orig_mod." (torch.compile) stripped. Anything
else is refused with one line naming the first missing and unexpected keys."""
from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..core.data import Dataset
from ..core.errors import UserError
from ..core.recipe import Recipe
from . import archnets

BUILTIN: dict[str, Callable[..., nn.Module]] = {
    "resnet18": archnets.resnet18, "resnet34": archnets.resnet34, "resnet50": archnets.resnet50,
    "mobilenet_v2": archnets.mobilenet_v2, "vgg11": archnets.vgg11, "vgg16": archnets.vgg16}
LIBRARIES = ("torchvision", "timm")
PREFIXES = ("module.", "_orig_mod.")      # DataParallel / DistributedDataParallel, torch.compile
CHECKPOINT_KEYS = ("state_dict", "model")
_NAME = re.compile(r"^(?:(torchvision|timm)/)?([A-Za-z0-9][A-Za-z0-9_.-]{0,99})$")


@dataclass(frozen=True)
class ArchName:
    """`--arch` parsed: the library it asks for (None: any) and the network's name."""
    library: str | None
    name: str

    def __str__(self) -> str:
        return f"{self.library}/{self.name}" if self.library else self.name


def parse(spec: str) -> ArchName:
    m = _NAME.match(spec.strip())
    if not m:
        raise UserError(f"--arch '{spec[:80]}': not an architecture name (e.g. resnet18, timm/resnet18, "
                        f"torchvision/vgg16; `--arch list` lists them)")
    return ArchName(m.group(1), m.group(2).lower() if m.group(1) != "timm" else m.group(2))


def _library(name: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def available() -> str:
    """What `--arch list` prints: the built-in names, and the libraries that add more."""
    libs = [lib for lib in LIBRARIES if _library(lib) is not None]
    extra = (f"; also any name of {' and '.join(libs)} (torchvision.models.list_models(), timm.list_models())"
             if libs else "; with torchvision or timm installed, any of their names too")
    return ("architectures for --arch (state-dict names as torchvision's; timm's ResNets share them): "
            + ", ".join(BUILTIN) + extra)


def build(spec: str | ArchName, n_classes: int, in_chans: int) -> nn.Module:
    """A fresh network of that name with `n_classes` outputs and `in_chans` input channels, never pretrained."""
    arch = parse(spec) if isinstance(spec, str) else spec
    if arch.library in (None, "torchvision") and (tv := _library("torchvision")) is not None:
        if arch.name in tv.models.list_models():
            return _with_in_chans(_call(arch, tv.models.get_model, arch.name, weights=None, num_classes=n_classes),
                                  in_chans)
        if arch.library == "torchvision":
            raise UserError(f"--arch {arch}: torchvision has no model of that name (torchvision.models.list_models())")
    if arch.library in (None, "timm") and (timm := _library("timm")) is not None:
        if timm.is_model(arch.name):
            return _call(arch, timm.create_model, arch.name, pretrained=False, num_classes=n_classes,
                         in_chans=in_chans)
        if arch.library == "timm":
            raise UserError(f"--arch {arch}: timm has no model of that name (timm.list_models())")
    base = arch.name.split(".")[0].lower()   # timm's "resnet18.a1_in1k" is resnet18 with other weights
    if base in BUILTIN and (arch.library != "timm" or base.startswith("resnet")):
        return BUILTIN[base](num_classes=n_classes, in_chans=in_chans)
    missing = [lib for lib in ((arch.library,) if arch.library else LIBRARIES) if _library(lib) is None]
    raise UserError(f"--arch {arch}: unknown architecture (built in: {', '.join(BUILTIN)}"
                    + (f"; {' and '.join(missing)} not installed" if missing else "") + ")")


def _call(arch: ArchName, make, *args, **kw) -> nn.Module:
    """A library's constructor; what it raises for these arguments is one line."""
    try:
        model = make(*args, **kw)
    except Exception as e:  # noqa: BLE001 - a library refusing a class count or channel count
        raise UserError(f"--arch {arch}: cannot build it ({type(e).__name__}: {str(e)[:160]})") from None
    if not isinstance(model, nn.Module):
        raise UserError(f"--arch {arch}: the library returned a {type(model).__name__}, not a network")
    return model


def _with_in_chans(model: nn.Module, in_chans: int) -> nn.Module:
    """torchvision builds 3-channel networks: the first convolution is rebuilt for `in_chans` (its name kept)."""
    for name, conv in model.named_modules():
        if isinstance(conv, nn.Conv2d):
            if conv.in_channels != in_chans:
                parent, _, leaf = name.rpartition(".")
                new = nn.Conv2d(in_chans, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                                conv.dilation, 1, conv.bias is not None, conv.padding_mode)
                setattr(model.get_submodule(parent) if parent else model, leaf, new)
            break
    return model


def _ends(model: nn.Module) -> tuple[str, str]:
    """The state-dict names of the first convolution's and the last linear layer's weights."""
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    heads = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not convs or not heads:
        raise UserError(f"--arch: {type(model).__name__} is not a convolutional classifier with a linear head")
    return f"{convs[0]}.weight", f"{heads[-1]}.weight"


def normalise(obj, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a state dict, unwrapped from a checkpoint dict and with a DataParallel / torch.compile
    prefix removed."""
    for key in CHECKPOINT_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj:
        raise UserError(f"{path}: expected a state dict (names to tensors), found "
                        f"{'an empty dict' if isinstance(obj, dict) else type(obj).__name__}")
    bad = [str(k)[:60] for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise UserError(f"{path}: not a state dict: {len(bad)} entries are not named tensors (first: {bad[0]})")
    for k, v in obj.items():   # a torch.save'd view with stride 0 declares any shape over one stored number:
        held = v.untyped_storage().nbytes() - v.storage_offset() * v.element_size()   # fc.weight [4194304, 512]
        if v.layout != torch.strided or v.numel() * v.element_size() > held:   # in 4 bytes built an 8 GiB head
            raise UserError(f"{path}: {k[:60]} {list(v.shape)} is not stored as its shape says ({max(held, 0)} "
                            "bytes behind it: an expanded or overlapping view); save the weights with .contiguous()")
    for prefix in PREFIXES:
        if all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix):]: v for k, v in obj.items()}
    return obj


def _first(names: list[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (f" (+{len(names) - n} more)" if len(names) > n else "")


def load_arch(path: Path, spec: str, data: Dataset) -> nn.Module:
    """The named network holding the file's weights, checked against the data's channels and classes."""
    from .models import _state_dict
    arch = parse(spec)
    if len(data.input_shape) != 3:
        raise UserError(f"--arch {arch} takes images (channels, height, width); {data.name} has samples of shape "
                        f"{list(data.input_shape)} (reshape with --input-shape, e.g. 1,8,8)")
    sd = normalise(_state_dict(path), path)
    with torch.device("meta"):   # names only: nothing allocated
        stem, head = _ends(build(arch, 1000, data.input_shape[0]))
    if stem not in sd or head not in sd or sd[stem].ndim != 4 or sd[head].ndim != 2:
        with torch.device("meta"):
            want = build(arch, 1000, data.input_shape[0]).state_dict()
        _refuse_keys(path, arch, want, sd)
    c, k = int(sd[stem].shape[1]), int(sd[head].shape[0])
    if c != data.input_shape[0]:
        raise UserError(f"{path}: the weights take {c} input channels ({stem} {list(sd[stem].shape)}) but "
                        f"{data.name} has {data.input_shape[0]} (samples of shape {list(data.input_shape)})")
    if k < data.n_classes:
        raise UserError(f"{path}: the weights have {k} classes ({head} {list(sd[head].shape)}) but {data.name} "
                        f"has labels up to {data.n_classes - 1}")
    with torch.device("meta"):   # every name and shape checked before anything is allocated: a head declaring
        want = build(arch, k, c).state_dict()   # 4M classes in zero bytes (fc.weight [4194304, 0]) built 8 GiB
    for name in want:   # a state dict without batch-norm step counters (older torch, some exporters)
        if name.endswith("num_batches_tracked") and name not in sd:
            sd[name] = torch.zeros((), dtype=torch.long)
    _refuse_keys(path, arch, want, sd)
    model = build(arch, k, c)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:   # what the checks above did not foresee, still one line
        raise UserError(f"{path}: weights do not fit --arch {arch} ({str(e).splitlines()[0][:200]})") from None
    return model


def _refuse_keys(path: Path, arch: ArchName, want: dict, got: dict) -> None:
    stats = ("running_mean", "running_var", "num_batches_tracked")   # weights named first, statistics last
    missing = sorted((k for k in want if k not in got), key=lambda k: k.endswith(stats))
    unexpected = sorted((k for k in got if k not in want), key=lambda k: k.endswith(stats))
    if missing or unexpected:
        raise UserError(f"{path}: weights do not fit --arch {arch}: "
                        + "; ".join(part for part in (f"missing {_first(missing)}" if missing else "",
                                                      f"unexpected {_first(unexpected)}" if unexpected else "")
                                    if part))
    shapes = [f"{n} {list(got[n].shape)} (want {list(want[n].shape)})" for n in want
              if tuple(got[n].shape) != tuple(want[n].shape)]
    if shapes:
        raise UserError(f"{path}: weights do not fit --arch {arch}: shape of " + "; ".join(shapes[:2])
                        + (f" (+{len(shapes) - 2} more)" if len(shapes) > 2 else ""))


WEIGHTS_FORMATS = ("torch", "safetensors", "pickle")   # the scan's names: torch.save zip, safetensors, old torch.save


def arch_target(path: Path, spec: str, fmt: str, scanned: str, data: Dataset):
    """The Target for `--model PATH --arch NAME` (the file already scanned, as `scanned`)."""
    from ..core.target import TorchTarget
    if fmt not in ("auto", "state-dict") or scanned not in WEIGHTS_FORMATS:
        raise UserError(f"{path}: --arch reads weights (a state dict in .safetensors, .pt or .pth); this file is "
                        f"{fmt if fmt != 'auto' else scanned}")
    return TorchTarget(load_arch(path, spec, data), data.n_classes, data.input_shape, name=path.name)


@dataclass(frozen=True)
class ArchFactory:
    """A recipe's factory building the named network for (input_shape, n_classes): `--recipe resnet18`
    retrains the architecture (harden, shadow models). Picklable, so backends can send it to workers."""
    spec: str

    def __call__(self, input_shape, n_classes: int) -> nn.Module:
        if len(input_shape) != 3:
            raise UserError(f"recipe {self.spec} trains an image network; samples of shape {list(input_shape)} "
                            "are not (channels, height, width)")
        return build(self.spec, n_classes, input_shape[0])

    def __repr__(self) -> str:
        return f"arch({self.spec})"


def is_arch(spec: str) -> bool:
    """Whether a --recipe value names an architecture (a built-in name, or one prefixed with its library)."""
    m = _NAME.match(spec.strip())
    return bool(m) and (m.group(1) is not None or m.group(2).split(".")[0].lower() in BUILTIN)


def arch_recipe(spec: str, epochs: int = 10) -> Recipe:
    """Training for the named architecture: Adam, learning rate 1e-3, batch 64, `epochs` epochs."""
    arch = parse(spec)
    return Recipe(str(arch), ArchFactory(str(arch)), epochs=epochs, batch_size=64, lr=1e-3)
