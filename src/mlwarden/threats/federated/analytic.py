"""Analytic recovery of a fully-connected layer's input (Phong et al. 2017, "Privacy-preserving deep learning
via additively homomorphic encryption"; Fowl et al. 2022): for y = W x + b, the gradient of row i of W is
dL/dy_i x^T and that of b_i is dL/dy_i, so gW_i / gb_i is the input exactly when one example reaches neuron
i, and a gradient-weighted mix of inputs otherwise. Every neuron gives a candidate; each original is matched
to its best distinct candidate (the share recovered at >= 25 dB is the number reported, as in Fowl et al.)."""
from __future__ import annotations

import torch
from torch import nn

from ...core.registry import register
from .idlg import idlg_labels
from .leakage import LeakageThreat


def first_linear(model: nn.Module) -> int | None:
    """The index, among the model's parameters, of the weight of its first layer when that is nn.Linear."""
    first = next((m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.Embedding))), None)
    if not isinstance(first, nn.Linear) or first.bias is None:
        return None
    return [id(p) for p in model.parameters()].index(id(first.weight))


def analytic(update: list[torch.Tensor], index: int, shape) -> torch.Tensor:
    gw, gb = update[index], update[index + 1]
    live = gb.abs() > 1e-8 * gb.abs().max().clamp_min(1e-30)
    return (gw[live] / gb[live, None]).view(-1, *shape[1:])


@register
class AnalyticFC(LeakageThreat):
    """Analytic recovery of the inputs of a model whose first layer is fully connected (Phong et al. 2017)."""
    name = "analytic-fc"
    title = "Analytic input recovery from a fully-connected first layer"
    what = "the first layer's gradients give back its images"

    def skip_reason(self, ctx):
        reason = super().skip_reason(ctx)
        if reason is None:
            d = ctx.data
            if first_linear(ctx.recipe.make_model(d.input_shape, d.n_classes)) is None:
                return "needs a model whose first layer is fully connected (nn.Linear with a bias)"
        return reason

    def reconstruct(self, model, update, batch, shape, n_classes, seed, p, ctx):
        return analytic(update, first_linear(model), shape), idlg_labels(update, batch, n_classes)
