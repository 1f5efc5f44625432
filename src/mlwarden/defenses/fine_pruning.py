"""Fine-pruning (Liu, Dolan-Gavitt & Garg 2018, "Fine-pruning: defending against backdooring attacks on deep
neural networks", RAID): a backdoor lives in neurons that clean inputs leave dormant. Prune the channels of
the last convolutional layer in increasing order of their mean activation on clean data, as long as the
clean accuracy on a held-out part of the defender's clean set drops by at most `max_drop`, then fine-tune
the pruned network on the clean set. A pruned channel is masked (a fixed 0/1 buffer after the layer), so
fine-tuning cannot bring it back and the network still exports. The paper's caveat: a pruning-aware
attacker can plant the backdoor in active neurons; fine-tuning then does the removing."""
from __future__ import annotations

import copy
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from ..core.defense import network_of
from ..core.errors import UserError
from ..core.layers import last_layer, last_linear
from ..core.registry import register
from .repair import RepairDefense, RepairHook, RepairParams, fine_tune


class ChannelMask(nn.Module):
    """Multiplies channel c of its input by mask[c] (0: pruned)."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("mask", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask.view(1, -1, *([1] * (x.dim() - 2)))


def last_conv(module: nn.Module) -> tuple[nn.Module, str, nn.Conv2d]:
    found = last_layer(module, nn.Conv2d)
    if found is None:
        raise UserError(f"fine-pruning prunes the last convolutional layer; {type(module).__name__} has no "
                        "nn.Conv2d (a network loaded from a .pt2 export has no layers to prune: load the "
                        "state_dict with its --factory)")
    return found


def _accuracy(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def fine_prune(model: nn.Module, x: torch.Tensor, y: torch.Tensor, n_classes: int, p: "PruneParams",
               seed: int) -> tuple[nn.Module, dict[str, Any]]:
    """(pruned and fine-tuned copy, facts). A fifth of (x, y) measures the accuracy drop while pruning."""
    net = copy.deepcopy(model).eval()
    if p.layer == "last-conv":
        parent, name, conv = last_conv(net)
        mask = ChannelMask(conv.out_channels)
        setattr(parent, name, nn.Sequential(conv, mask))
        channels = conv.out_channels
    else:
        parent, name, conv = last_linear(net)
        mask = ChannelMask(conv.in_features)
        setattr(parent, name, nn.Sequential(mask, conv))
        channels = conv.in_features
    held = max(1, len(x) // 5)
    xv, yv = x[:held], y[:held]
    acts = []
    if p.layer == "last-conv":
        handle = conv.register_forward_hook(lambda m, i, out: acts.append(torch.relu(out).mean(dim=(0, 2, 3))))
    else:
        handle = conv.register_forward_hook(lambda m, i, out: acts.append(i[0].flatten(1).mean(0)))
    with torch.no_grad():
        net(x)
    handle.remove()
    order = torch.argsort(acts[0])                        # the most dormant channels first
    base = _accuracy(net, xv, yv)
    limit = min(int(p.max_prune * channels), channels - 1)
    pruned = 0
    for k in range(1, limit + 1):
        mask.mask[order[k - 1]] = 0.0
        if base - _accuracy(net, xv, yv) > p.max_drop:
            mask.mask[order[k - 1]] = 1.0
            break
        pruned = k
    after_prune = _accuracy(net, xv, yv)
    tuned = fine_tune(net, x, y, n_classes, p, seed)
    return tuned, {"layer": f"{p.layer}: {conv}", "channels_pruned": pruned, "channels": channels,
                   "held_out_accuracy": {"before": round(base, 4), "pruned": round(after_prune, 4),
                                         "fine_tuned": round(_accuracy(tuned, xv, yv), 4), "n": held},
                   "clean_points": len(x), "fine_tune_epochs": p.epochs}


class PruneParams(RepairParams):
    max_drop: float = Field(0.05, ge=0, le=1, description="largest clean-accuracy drop pruning may cause "
                                                          "(held-out fifth of the clean set)")
    layer: Literal["last-conv", "penultimate"] = Field("last-conv", description="prune the last conv layer's "
                                                      "channels (the paper) or the head's input features")
    max_prune: float = Field(0.9, gt=0, le=1, description="largest share of the layer's channels pruned")


@register
class FinePruning(RepairDefense):
    """Fine-pruning (Liu et al. 2018): prune dormant channels of the last conv layer, then fine-tune."""

    name = "fine-pruning"
    title = "Fine-pruning: prune channels dormant on clean data, then fine-tune (backdoor removal)"
    Params = PruneParams
    sweepable = ("max_drop", "epochs")

    def check_target(self, target, params: PruneParams) -> None:
        net = network_of(target, self.name)
        if params.layer == "last-conv":
            last_conv(net)
        else:
            last_linear(net)

    def repair(self, model: nn.Module, hook: RepairHook) -> tuple[nn.Module, dict[str, Any]]:
        return fine_prune(model, hook.x, hook.y, hook.n_classes, hook.params, hook.seed)
