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


_GRAPH_LINEAR = ("aten.linear.default", "aten.addmm.default")   # (input, weight[, bias]) / (bias, input, weight^T)


def _graph_head(module: nn.Module):
    """(graph module, node, index of the features among its arguments) of the last linear operation in an
    exported program's graph (`torch.export`: the layers are operations, not nn.Linear children), or None."""
    for gm in module.modules():
        if isinstance(gm, torch.fx.GraphModule):
            found = [n for n in gm.graph.nodes if n.op == "call_function" and str(n.target) in _GRAPH_LINEAR]
            if found:
                node = found[-1]
                return gm, node, 0 if str(node.target) == _GRAPH_LINEAR[0] else 1
    return None


def head_reason(module: nn.Module) -> str | None:
    """Why the module's classifier head cannot be found (None when it can): the reason a threat that reads
    penultimate features skips."""
    if last_layer(module, nn.Linear) is not None or _graph_head(module) is not None:
        return None
    return (f"needs the network's classifier head (its last nn.Linear, or a linear operation in a torch.export "
            f"graph); this {type(module).__name__} has neither (a TorchScript module hides its layers)")


class _Reached(Exception):
    def __init__(self, value):
        self.value = value


def penultimate(module: nn.Module):
    """x -> the input of the module's last linear layer (the features a new head is trained on), flat. In an
    exported program's graph, the features are the input of its last linear operation, read by running the
    graph node by node up to it (torch.fx.Interpreter), gradients included."""
    graph = None if last_layer(module, nn.Linear) is not None else _graph_head(module)
    if graph is not None:
        gm, node, index = graph

        class UpToHead(torch.fx.Interpreter):
            def run_node(self, n):
                if n is node:
                    args, _ = self.fetch_args_kwargs_from_env(n)
                    raise _Reached(args[index])
                return super().run_node(n)

        def graph_features(x: torch.Tensor) -> torch.Tensor:
            try:
                UpToHead(gm).run(x)
            except _Reached as r:
                return r.value.flatten(1).to(x.device)
            raise RuntimeError("the graph returned before its last linear operation")
        return graph_features
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
