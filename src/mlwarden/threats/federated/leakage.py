"""What every gradient-leakage threat shares: a curious server reconstructs a client's training batch from
the update it receives (Zhu, Liu & Han 2019, "Deep leakage from gradients"; Geiping et al. 2020, "Inverting
gradients"). The server knows the model it sent (here the federation's initial model, round 1, where
leakage is highest) and sees the client's update: one gradient (FedSGD) or, after `local_steps` SGD steps
at `lr`, the model delta divided by -lr (the summed gradients, FedAvg). Under secure aggregation (the
federation's rule `secure-aggregation`) it sees only the sum over `aggregated` clients, each with its own
batch, and attacks that.

Measured per batch size over `trials` batches: PSNR and SSIM of each original against its best-matching
reconstruction (Hungarian matching on MSE), the share of originals recovered at >= 25 dB (Clopper-Pearson),
and the share of labels recovered."""
from __future__ import annotations

import math
import time
from typing import Annotated, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ...core.finding import Finding, Metric, Remedy, Status
from ...core.severity import LEAKAGE
from ...core.target import Access
from ...core.threat import Context, Params, Threat
from .common import seed_metric

RECOVERED_DB = 25.0
REMEDY = Remedy("secure-aggregation", "Keep single updates from the server: secure aggregation (CKKS) lets it see only the "
                "sum of many clients' updates; larger local batches and more local steps also blur what one update "
                "holds, and DP noise on the update bounds it. A malicious server that changes the model can still "
                "make the sum leak (robbing the fed): verify the model the server sends.",
                "mlwarden harden --defense secure-aggregation")


class LeakageParams(Params):
    batch_sizes: list[Annotated[int, Field(ge=1, le=256)]] = Field([1, 2, 4, 8], min_length=1)
    trials: int = Field(10, ge=1, le=1000, description="batches attacked per batch size")
    local_steps: int = Field(1, ge=1, le=100, description="1: FedSGD (one gradient); more: FedAvg SGD steps")
    lr: float = Field(0.1, gt=0, description="the client's SGD learning rate (local_steps > 1)")
    aggregated: int | None = Field(None, ge=2, le=1000, description="clients summed under secure aggregation "
                                   "(default: the federation's clients)")


def gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, create_graph: bool = False) -> list[torch.Tensor]:
    loss = F.cross_entropy(model(x), y)
    return list(torch.autograd.grad(loss, [p for p in model.parameters()], create_graph=create_graph))


def client_update(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 1, lr: float = 0.1
                  ) -> list[torch.Tensor]:
    """What the server receives, as summed gradients: the batch gradient (steps 1) or the delta of `steps`
    full-batch SGD steps divided by -lr."""
    if steps == 1:
        return [g.detach() for g in gradients(model, x, y)]
    import copy
    local = copy.deepcopy(model)
    opt = torch.optim.SGD(local.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(local(x), y).backward()
        opt.step()
    return [(a.detach() - b.detach()) / -lr for a, b in zip(local.parameters(), model.parameters())]


def psnr(a: torch.Tensor, b: torch.Tensor, span: float) -> torch.Tensor:
    """Per image, capped at 100 dB (an exact copy)."""
    mse = ((a - b) ** 2).flatten(1).mean(1).clamp_min(span ** 2 * 1e-10)
    return 10 * torch.log10(span ** 2 / mse)


def ssim(a: torch.Tensor, b: torch.Tensor, span: float, window: int = 3) -> torch.Tensor:
    """Per image: mean SSIM (Wang et al. 2004) over a uniform window (3 for 8x8 digits)."""
    c1, c2 = (0.01 * span) ** 2, (0.03 * span) ** 2
    pool = lambda t: F.avg_pool2d(t, window, 1)  # noqa: E731
    mu_a, mu_b = pool(a), pool(b)
    va, vb, cov = pool(a * a) - mu_a ** 2, pool(b * b) - mu_b ** 2, pool(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (va + vb + c2))
    return s.flatten(1).mean(1)


def match(originals: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """For each original, the candidate assigned to it (Hungarian matching on MSE; with more candidates than
    originals, the best distinct ones; with fewer, the originals left over get their nearest candidate again)."""
    from scipy.optimize import linear_sum_assignment
    if len(candidates) == 0:
        return torch.zeros_like(originals)
    dist = torch.cdist(originals.flatten(1).double(), candidates.flatten(1).double()).pow(2)
    rows, cols = linear_sum_assignment(dist.numpy())
    order = dist.argmin(1)
    order[torch.as_tensor(rows, dtype=torch.long)] = torch.as_tensor(cols, dtype=torch.long)
    return candidates[order]


def label_hits(true: torch.Tensor, found: torch.Tensor) -> int:
    """How many of the true labels the recovered multiset holds."""
    hits, pool = 0, found.tolist()
    for t in true.tolist():
        if t in pool:
            pool.remove(t)
            hits += 1
    return hits


def defended(update: list[torch.Tensor], transforms: tuple, seed: int) -> list[torch.Tensor]:
    """The update after the client's own defences (gradient pruning, noise), as the federation applies them."""
    if not transforms:
        return update
    from ...federated.recipe import transform_update
    flat = transform_update(torch.cat([t.flatten() for t in update]), transforms, seed)
    out, i = [], 0
    for t in update:
        out.append(flat[i:i + t.numel()].view_as(t))
        i += t.numel()
    return out


def secure_sum(parts: list[list[torch.Tensor]], params: dict) -> list[torch.Tensor]:
    """What the server decrypts under secure aggregation: the clients' updates summed as CKKS ciphertexts."""
    from ...federated.ckks import CKKS
    flat = torch.stack([torch.cat([t.flatten() for t in p]) for p in parts]).double()
    total, _ = CKKS(params.get("poly_modulus_degree", 8192), params.get("scale_bits", 40)).secure_sum(flat)
    out, i = [], 0
    for t in parts[0]:
        out.append(total[i:i + t.numel()].view_as(t).to(t.dtype))
        i += t.numel()
    return out


class LeakageThreat(Threat):
    family = "federated"
    needs = Access.WHITE_BOX
    needs_recipe = True
    in_default_audit = False
    atlas = ["AML.T0024.001"]
    modalities = ("image",)
    Params = LeakageParams
    remedy = REMEDY
    recovers_images: ClassVar[bool] = True

    def skip_reason(self, ctx: Context) -> str | None:
        reason = super().skip_reason(ctx)   # the server holds the model: white-box
        if reason is None and not getattr(ctx.recipe, "federated", False):
            return "needs a federation: mlwarden audit --federated (the server sees its clients' updates)"
        return reason

    def serve(self, model, ctx, params):
        """The model the server sends: the federation's own (an honest-but-curious server), or a modified one."""
        return model

    def reconstruct(self, model, update, batch: int, shape, n_classes, seed: int, p, ctx):
        """(images or None, labels or None) from the update the server sees."""
        raise NotImplementedError

    def run(self, ctx: Context, params) -> Finding:
        t0 = time.monotonic()
        d, fed = ctx.data, ctx.recipe
        span = float(d.space.high - d.space.low)
        torch.manual_seed(ctx.seed)
        model = self.serve(fed.local().make_model(d.input_shape, d.n_classes), ctx, params)   # the round-1 model
        secure = fed.aggregator == "secure-aggregation"
        k = (params.aggregated or fed.clients) if secure else 1
        g = torch.Generator().manual_seed(ctx.seed + 17)
        rows, metrics, shown = [], [], None
        for b in params.batch_sizes:
            ps, ss, hits, labels, recovered = [], [], 0, 0, 0
            for trial in range(params.trials):
                ctx.check_time()
                pick = torch.randperm(len(d.x_train), generator=g)[:b * k]
                xs, ys = d.x_train[pick], d.y_train[pick]
                parts = [defended(client_update(model, xs[i * b:(i + 1) * b], ys[i * b:(i + 1) * b],
                                                params.local_steps, params.lr), fed.update_transforms,
                                  ctx.seed * 1009 + trial * 31 + i) for i in range(k)]
                # the server divides the decrypted sum by k: the gradient of the mean over all b x k examples
                update = [t / k for t in secure_sum(parts, ctx.recipe.aggregator_params)] if secure else parts[0]
                images, found = self.reconstruct(model, update, b * k, xs.shape, d.n_classes, ctx.seed + trial,
                                                 params, ctx)
                if found is not None:
                    hits += label_hits(ys, found)
                    labels += len(ys)
                if images is not None:
                    matched = match(xs, images.clamp(d.space.low, d.space.high))
                    p_ = psnr(matched, xs, span)
                    ps += p_.tolist()
                    ss += ssim(matched, xs, span).tolist()
                    recovered += int((p_ >= RECOVERED_DB).sum())
                    if trial == 0 and (shown is None or len(xs) > len(shown[0])):   # the largest batch, up to 8
                        shown = (xs[:8], matched[:8], p_[:8])
            row = {"batch": b, "clients_summed": k, "trials": params.trials}
            if labels:
                m = Metric.rate(f"labels recovered, batch {b}", hits, labels)
                metrics.append(m)
                row.update(labels=round(m.value, 4), labels_ci=[round(m.ci_low, 4), round(m.ci_high, 4)])
            if ps:
                mp = seed_metric(f"PSNR, batch {b} (mean of {len(ps)} images)", ps, -math.inf, math.inf, "dB")
                mr = Metric.rate(f"originals recovered at >= {RECOVERED_DB:g} dB, batch {b}", recovered, len(ps))
                metrics += [mr, mp]
                row.update(psnr=round(mp.value, 2), psnr_ci=[round(mp.ci_low, 2), round(mp.ci_high, 2)],
                           ssim=round(sum(ss) / len(ss), 4), recovered=round(mr.value, 4))
            rows.append(row)
        head = metrics[0]
        sees = f"the sum of {k} clients' updates (secure aggregation)" if secure else "one client's update"
        smallest = f"batch {min(params.batch_sizes)}"
        lead = next((m for m in metrics if m.name.startswith("originals recovered") and m.name.endswith(smallest)),
                    next((m for m in metrics if m.name.endswith(smallest)), head))
        severity = LEAKAGE.grade(lead.ci_low if lead.ci_low is not None else lead.value)
        headline = f"From {sees}, {self.what}: {lead.name} {lead.text()}"
        evidence = [self.plot(ctx, shown, d)] if shown is not None else []
        return self.finding(ctx, params, status=Status.OK, severity=severity, headline=headline, metrics=metrics,
                            evidence=evidence, seconds=time.monotonic() - t0,
                            details={"headline_metric": lead.name, "headline_worse": "higher", "table": rows,
                                     "server_sees": sees, "federation": fed.summary()})

    what: ClassVar[str] = ""

    def plot(self, ctx, shown, d) -> str:
        from ...plots import two_rows
        x, rec, p_ = shown
        path = ctx.evidence_path("reconstructions.png")
        two_rows(path, x, rec, [f"{v:.0f} dB" for v in p_.tolist()], d.space.low, d.space.high,
                 title=f"{self.name}: originals and reconstructions")
        return ctx.rel(path)
