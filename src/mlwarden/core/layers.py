"""Where a network's classifier head is: the features a new head is trained on (transfer learning,
feature-collision poisoning, activation-based poison detection) and how to swap the head for a new task."""
from __future__ import annotations

import copy

import torch
from torch import nn

from .errors import UserError


def last_layer(module: nn.Module, kind: type[nn.Module]) -> tuple[nn.Module, str, nn.Module] | None:
    """(parent, attribute name, layer) of the module's last layer of this kind in registration order."""
    found = None
    for parent in module.modules():
        for name, child in parent.named_children():
            if isinstance(child, kind):
                found = (parent, name, child)
    return found


def last_linear(module: nn.Module) -> tuple[nn.Module, str, nn.Linear]:
    """(parent, attribute name, layer) of the module's last nn.Linear in registration order: its head."""
    found = last_layer(module, nn.Linear)
    if found is None:
        raise UserError(f"{type(module).__name__} has no linear layer: a classifier head is needed to take its "
                        "features (the input of the last linear layer)")
    return found


def penultimate(module: nn.Module):
    """x -> the input of the module's last linear layer (the features a new head is trained on), flat."""
    _, _, head = last_linear(module)

    def features(x: torch.Tensor) -> torch.Tensor:
        store = {}
        handle = head.register_forward_hook(lambda m, inp, out: store.__setitem__("f", inp[0]))
        try:
            module(x)
        finally:
            handle.remove()
        return store["f"].flatten(1).to(x.device)   # a network on a GPU (core/device.OnDevice) answers here
    return features


def new_head(module: nn.Module, n_classes: int, *, freeze: bool, seed: int = 0) -> nn.Module:
    """A copy of the module whose last linear layer is replaced by a fresh one with `n_classes` outputs;
    with `freeze`, every other parameter stops training (transfer learning on frozen features)."""
    out = copy.deepcopy(module)
    parent, name, head = last_linear(out)
    torch.manual_seed(seed)
    fresh = nn.Linear(head.in_features, n_classes, bias=head.bias is not None)
    for p in out.parameters():
        p.requires_grad_(not freeze)
    setattr(parent, name, fresh)
    return out
