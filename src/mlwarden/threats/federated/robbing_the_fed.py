"""Robbing the Fed (Fowl, Geiping, Czaja, Goldblum & Goldstein 2022, "Robbing the fed: directly obtaining
private data in federated learning with modified models"): a malicious server sends a model whose first
fully-connected layer is an imprint module. `bins` of its neurons all measure the same quantity, the mean of
the input, against increasing thresholds at quantiles of its distribution on public data (the test split
here), and the next layer weighs those neurons identically, so an example reaching bins up to i adds the same
error signal to each. The difference of the gradients of two neighbouring bins is then one example's input
times its error whenever exactly one example falls between their thresholds, and dividing by the bias
difference gives the input back exactly: through secure aggregation too, since examples of different clients
fall into different bins (Pasquini et al. 2022 show the same for secure aggregation)."""
from __future__ import annotations

import copy

import torch
from pydantic import Field
from torch import nn

from ...core.registry import register
from .analytic import first_linear
from .idlg import idlg_labels
from .leakage import LeakageParams, LeakageThreat


def linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def imprint(model: nn.Module, bins: int, public: torch.Tensor) -> tuple[nn.Module, int]:
    """The model with its first layer's first `bins` neurons turned into the imprint module; (model, bins)."""
    from scipy.stats import norm
    bad = copy.deepcopy(model)
    first, second = linears(bad)[:2]
    bins = min(bins, first.out_features)
    measure = public.flatten(1).mean(1)
    mu, sd = float(measure.mean()), float(measure.std())
    cuts = torch.tensor(norm.ppf(torch.arange(1, bins + 1) / (bins + 1), loc=mu, scale=sd), dtype=first.bias.dtype)
    with torch.no_grad():
        first.weight[:bins] = 1.0 / first.in_features
        first.bias[:bins] = -cuts
        second.weight[:, :bins] = second.weight[:, :1]          # every bin feeds the next layer the same way
    return bad, bins


def rob(update: list[torch.Tensor], index: int, bins: int, shape) -> torch.Tensor:
    gw, gb = update[index][:bins], update[index + 1][:bins]
    dw = torch.cat([gw[:-1] - gw[1:], gw[-1:]])
    db = torch.cat([gb[:-1] - gb[1:], gb[-1:]])
    live = db.abs() > 1e-8 * db.abs().max().clamp_min(1e-30)
    return (dw[live] / db[live, None]).view(-1, *shape[1:])


class RobParams(LeakageParams):
    bins: int = Field(128, ge=2, le=100_000, description="first-layer neurons turned into imprint bins")


@register
class RobbingTheFed(LeakageThreat):
    """Robbing the Fed: a malicious server's imprint module makes updates, and their secure sum, leak inputs (Fowl et al. 2022)."""
    name = "robbing-the-fed"
    title = "Malicious server: imprint module (Robbing the Fed)"
    what = "a server that modifies the model recovers its images"
    Params = RobParams

    def skip_reason(self, ctx):
        reason = super().skip_reason(ctx)
        if reason is None:
            d = ctx.data
            model = ctx.recipe.make_model(d.input_shape, d.n_classes)
            if first_linear(model) is None or len(linears(model)) < 2:
                return "needs a model whose first layer is fully connected and followed by another (an MLP)"
        return reason

    def serve(self, model, ctx, params):
        return imprint(model, params.bins, ctx.data.x_test)[0]

    def reconstruct(self, model, update, batch, shape, n_classes, seed, p, ctx):
        bins = min(p.bins, linears(model)[0].out_features)
        return rob(update, first_linear(model), bins, shape), idlg_labels(update, batch, n_classes)
