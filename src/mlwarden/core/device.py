"""Where the model's arithmetic runs: `--device auto|cpu|cuda|cuda:N|mps`.

`auto` takes a visible GPU (CUDA, then Apple's MPS), else the CPU. A device is a place for the network:
the audited model's forward and backward passes (its Target answers queries there; white-box attacks get
the network behind `OnDevice`, which moves inputs there and results back, gradients included) and every
model a recipe trains (reference models, retrained victims, hardened models train there and come back
to the CPU). Data, perturbations and reports stay on the CPU, so no attack needs to know."""
from __future__ import annotations

import re

import torch
from torch import nn

from .errors import UserError

DEVICE_HELP = "auto | cpu | cuda | cuda:N | mps (auto: a GPU when one is visible)"


def resolve_device(spec: str | None) -> torch.device:
    spec = (spec or "cpu").strip().lower()
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps and mps.is_available())
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())   # written as cuda:N, like --device cuda
        return torch.device("mps") if has_mps else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not has_mps:
            raise UserError("--device mps: no Apple GPU (MPS) is available here")
        return torch.device("mps")
    m = re.fullmatch(r"cuda(?::(\d+))?", spec)
    if m is None:
        raise UserError(f"--device {spec!r}: expected {DEVICE_HELP}")
    if not torch.cuda.is_available():
        raise UserError(f"--device {spec}: no CUDA GPU is visible (torch {torch.__version__}"
                        + (", a CPU-only build" if torch.version.cuda is None else "") + ")")
    index = int(m.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise UserError(f"--device {spec}: only {torch.cuda.device_count()} CUDA GPU(s) are visible")
    return torch.device("cuda", index)


class OnDevice(nn.Module):
    """`inner` lives on `device`; inputs move there and outputs come back to the inputs' device, so a
    caller working on the CPU (an attack) drives a GPU network, gradients flowing through both moves."""

    def __init__(self, inner: nn.Module, device: torch.device):
        super().__init__()
        self.inner, self.device = inner, device

    def forward(self, x):
        return self.inner(x.to(self.device)).to(x.device)


def device_of(module: nn.Module) -> torch.device:
    """Where a module's parameters live (the CPU for one without parameters)."""
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def on_its_device(module: nn.Module) -> nn.Module:
    """The module as a caller on the CPU drives it: behind `OnDevice` when its parameters are elsewhere."""
    device = device_of(module)
    return module if device.type == "cpu" else OnDevice(module, device)


def move(module: nn.Module, device: torch.device) -> nn.Module:
    """The module on `device`, or a one-line error for a format that cannot move (some exported graphs)."""
    try:
        return module.to(device)
    except (RuntimeError, NotImplementedError, AttributeError) as e:
        raise UserError(f"this model cannot move to {device} ({type(e).__name__}: {str(e)[:120]}); audit it with "
                        "--device cpu") from None
