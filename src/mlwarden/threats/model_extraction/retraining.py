"""Retraining attacks (Tramer et al. 2016, sections 4.2 and 5): train a copy of the model class on
queries chosen uniformly, by line search towards the decision boundary (binary search between two
differently labelled points, keeping both ends), or adaptively (each round, query the candidates the
current copy is least sure about). Line search and adaptive use labels; uniform uses the scores when the
API gives them (`answers = "auto"`), which is Tramer's extraction of small MLPs by optimisation over
many more queries than equation solving needs, and labels otherwise."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ...core import zoo
from ...core.registry import register
from ...core.threat import Context, Params
from .common import DETECTOR_BLIND_SPOT, ExtractionThreat, ask, copy_factory, fit_copy, report_copy
from .equation_solving import scaled_queries


class Rp(Params):
    strategy: Literal["uniform", "line-search", "adaptive"] = "adaptive"
    answers: Literal["auto", "labels"] = Field("auto", description="auto: scores when given (uniform only)")
    budget: int = Field(650, ge=20, description="label queries")
    epochs: int = Field(150, ge=1)
    search_steps: int = Field(6, ge=1, le=20, description="binary-search steps per boundary point")
    rounds: int = Field(5, ge=1)
    n_uniform: int = Field(5000, ge=100)


@register
class Retraining(ExtractionThreat):
    """Tramer et al. 2016 retraining: uniform queries (scores when given), line search or adaptive (labels)."""
    name = "extract-retraining"
    title = "Model extraction by retraining on label-only answers"
    Params = Rp

    def run(self, ctx: Context, p: Rp):
        factory = copy_factory(ctx, zoo.logreg)
        s, shape, c = ctx.data.space, ctx.data.input_shape, ctx.data.n_classes
        lr = 1e-2 if factory is zoo.logreg else 1e-3
        fit = lambda x, y, r=0: fit_copy(factory, x, y, c, epochs=p.epochs, lr=lr, seed=ctx.seed + r)  # noqa: E731
        if p.strategy == "uniform":
            x = scaled_queries(p.budget, shape, s.low, s.high, ctx.seed)
            y = ask(ctx.target, x, prefer_scores=p.answers == "auto")
        elif p.strategy == "line-search":
            x, y = self._line_search(ctx, p, shape, s)
        else:
            x, y = self._adaptive(ctx, p, shape, s, fit)
        stolen = fit(x, y, 99)
        return report_copy(self, ctx, p, stolen, len(x), y, f"retraining-{p.strategy}.pt",
                           {"strategy": p.strategy}, notes=[DETECTOR_BLIND_SPOT])

    @staticmethod
    def _line_search(ctx, p, shape, s):
        n0 = max(2, p.budget // (2 + p.search_steps))
        x = scaled_queries(n0, shape, s.low, s.high, ctx.seed)
        y = ctx.target.labels(x).long()
        xs, ys = [x], [y]
        g = torch.Generator().manual_seed(ctx.seed)
        used = n0
        while used + p.search_steps <= p.budget:
            i, j = torch.randint(0, n0, (2,), generator=g).tolist()
            if y[i] == y[j]:
                continue
            a, b, ya = x[i], x[j], y[i]
            for _ in range(p.search_steps):
                mid = (a + b) / 2
                ym = ctx.target.labels(mid[None]).long()[0]
                used += 1
                xs.append(mid[None])
                ys.append(ym[None])
                if ym == ya:
                    a = mid
                else:
                    b = mid
            ctx.check_time()
        return torch.cat(xs), torch.cat(ys)

    @staticmethod
    def _adaptive(ctx, p, shape, s, fit):
        per_round = p.budget // p.rounds
        x = scaled_queries(per_round, shape, s.low, s.high, ctx.seed)
        y = ctx.target.labels(x).long()
        for r in range(1, p.rounds):
            ctx.check_time()
            copy = fit(x, y, r)
            cand = scaled_queries(20 * per_round, shape, s.low, s.high, ctx.seed + r)
            with torch.no_grad():
                top2 = copy(cand).softmax(1).topk(2, dim=1).values
            pick = cand[(top2[:, 0] - top2[:, 1]).argsort()[:per_round]]  # smallest margins first
            x = torch.cat([x, pick])
            y = torch.cat([y, ctx.target.labels(pick).long()])
        return x, y
