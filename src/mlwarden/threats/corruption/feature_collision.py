"""Clean-label feature collision against transfer learning: Poison Frogs (Shafahi et al. 2018, "Poison
frogs! Targeted clean-label poisoning attacks on neural networks", NeurIPS) and its multi-poison form,
Bullseye Polytope (Aghakhani et al. 2021, "Bullseye polytope: a scalable clean-label poisoning attack
with improved transferability", EuroS&P).

Threat model: the victim trains a new linear head (multinomial logistic regression to convergence) on the
frozen features of a pre-trained network, the audited model's layers up to its last linear layer, using
training data the attacker can add a few correctly labelled images to. For one target test input t of
class A, the attacker picks a base class B (the clean head's runner-up for t) and the B training images
nearest t in feature space, and perturbs each within an explicit Linf bound eps until their features
collide with t's: each poison's (Poison Frogs, `collision`) or their mean (Bullseye, `bullseye`: if the
head calls every poison B and t sits at their mean, a linear head must call t B too). The poisons keep
their true label B. To keep them looking like B, the attacker also keeps its own input-space surrogate
(an MLP it trains) calling them B (`keep_base`). Success: the head trained with the poisons calls t B.

Measured over several targets, each with its own poisons and fine-tuning: the share turned (with its
interval), the clean head's accuracy and the poisoned heads', the largest perturbation, and how clean
models classify the poisons: an independent MLP trained from scratch (another seed than the surrogate's)
and the victim's own model, which, sharing the features the poisons collide in, cannot call them B."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ...core import measure
from ...core.finding import Finding, Metric, Severity, Status
from ...core.layers import head_reason, penultimate
from ...core.recipe import BUILTIN_RECIPES
from ...core.registry import register
from ...core.severity import POISONING
from ...core.target import Access
from ...core.threat import Context, Params, Threat
from .label_flipping import REMEDY


class CollisionParams(Params):
    targets: int = Field(10, ge=1, le=200, description="target test inputs attacked, one at a time")
    poisons: int = Field(5, ge=1, le=50, description="poisons per target")
    eps: float = Field(0.3, gt=0, le=1, description="Linf bound of a poison around its base image, as a share of "
                                                    "the input range")
    objective: Literal["bullseye", "collision"] = "bullseye"
    keep_base: float = Field(0.5, ge=0, description="weight of the term that keeps the attacker's surrogate "
                                                    "calling the poisons their base class (0: plain collision)")
    steps: int = Field(120, ge=1, le=5000)
    fine_tune_per_class: int | None = Field(None, ge=1, description="the victim fine-tunes on this many training "
                                                                    "points a class (unset: all of them)")
    head_c: float = Field(10.0, gt=0, description="inverse L2 strength of the victim's logistic-regression head")


def craft(features, target: torch.Tensor, bases: torch.Tensor, base_label: int, eps: float, low: float,
          high: float, steps: int, objective: str, keep_base: float = 0.0, surrogate=None) -> torch.Tensor:
    """Poisons within `eps` (Linf, input units) of `bases` whose features collide with the target's: each
    poison's (collision) or their mean (bullseye), by Adam on the perturbation with cosine decay,
    projected on the bound and the input range after every step."""
    with torch.no_grad():
        ft = features(target[None])[0]
    scale = (ft ** 2).sum().clamp_min(1e-12)
    delta = torch.zeros_like(bases, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=eps / 10)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    want = torch.full((len(bases),), base_label)
    for _ in range(steps):
        x = bases + delta
        f = features(x)
        loss = (((f.mean(0) - ft) ** 2).sum() if objective == "bullseye" else ((f - ft) ** 2).sum(1).mean()) / scale
        if keep_base > 0 and surrogate is not None:
            loss = loss + keep_base * torch.nn.functional.cross_entropy(surrogate(x), want)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            delta.copy_(torch.max(torch.min(bases + delta, bases + eps), bases - eps).clamp(low, high) - bases)
    return (bases + delta).detach()


def embed(features, x: torch.Tensor) -> torch.Tensor:
    """The frozen features of x, 512 inputs a forward pass. They do not change while the attack runs, so the
    run embeds the fine-tuning and test sets once and only each target's poisons anew."""
    with torch.no_grad():
        return torch.cat([features(x[i:i + 512]) for i in range(0, len(x), 512)])


def fine_tune_head(f: torch.Tensor, y: torch.Tensor, c: float, seed: int):
    """The victim's new head on frozen features f: multinomial logistic regression trained to convergence."""
    from sklearn.linear_model import LogisticRegression
    return LogisticRegression(C=c, max_iter=3000, random_state=seed).fit(f.numpy(), y.numpy())


def head_predict(head, f: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(head.predict(f.numpy()))


def per_class(y: torch.Tensor, k: int | None, seed: int) -> torch.Tensor:
    """Indices of at most k points of every class (all points when k is None)."""
    if k is None:
        return torch.arange(len(y))
    g = torch.Generator().manual_seed(seed)
    return torch.cat([idx[torch.randperm(len(idx), generator=g)[:k]]
                      for idx in (torch.nonzero(y == c).flatten() for c in torch.unique(y))]).sort().values


@register
class FeatureCollision(Threat):
    """Poison Frogs / Bullseye Polytope: clean-label poisons that turn a chosen input after fine-tuning."""

    name = "feature-collision"
    family = "model-corruption"
    title = "Clean-label poisons that turn a chosen input after fine-tuning (feature collision)"
    needs = Access.WHITE_BOX
    modalities = ("image",)
    atlas = ["AML.T0020"]
    Params = CollisionParams
    profiles = {"quick": {"targets": 5, "steps": 60}}
    remedy = REMEDY
    needs_torch = True
    in_default_audit = False   # crafts poisons and fine-tunes a head per target

    def skip_reason(self, ctx: Context) -> str | None:
        return super().skip_reason(ctx) or head_reason(ctx.target.module)

    def run(self, ctx: Context, p: CollisionParams) -> Finding:
        module, data, seed = ctx.target.module.eval(), ctx.data, ctx.seed
        features = penultimate(module)
        lo, hi = data.space.low, data.space.high
        eps = p.eps * (hi - lo)
        ft_idx = per_class(data.y_train, p.fine_tune_per_class, seed)
        x_ft, y_ft = data.x_train[ft_idx], data.y_train[ft_idx]
        f_ft, f_test = embed(features, x_ft), embed(features, data.x_test)
        clean_head = fine_tune_head(f_ft, y_ft, p.head_c, seed)
        clean_pred = head_predict(clean_head, f_test)
        ok_clean = clean_pred == data.y_test
        clean_acc = Metric.rate("clean fine-tuned head: test accuracy", int(ok_clean.sum()), len(ok_clean))
        mlp = BUILTIN_RECIPES["mlp"]
        surrogate = mlp.fit(data.x_train, data.y_train, data.n_classes, seed=seed + 2) if p.keep_base > 0 else None
        judge = mlp.fit(data.x_train, data.y_train, data.n_classes, seed=seed + 1)
        g = torch.Generator().manual_seed(seed)
        candidates = torch.nonzero(ok_clean).flatten()
        order = candidates[torch.randperm(len(candidates), generator=g)][:p.targets]
        f_train = embed(features, data.x_train)
        turned, accs, judged, own, sizes, rows = [], [], 0, 0, [], []
        worst_acc = None
        for t in order.tolist():
            ctx.check_time()
            a = int(data.y_test[t])
            with torch.no_grad():
                proba = torch.as_tensor(clean_head.predict_proba(features(data.x_test[t:t + 1]).numpy())[0])
            proba[a] = -1
            b = int(clean_head.classes_[int(proba.argmax())])
            pool = torch.nonzero(data.y_train == b).flatten()
            with torch.no_grad():
                near = (f_train[pool] - features(data.x_test[t:t + 1])).norm(dim=1).argsort()[:p.poisons]
            bases = data.x_train[pool[near]]
            poisons = craft(features, data.x_test[t], bases, b, eps, lo, hi, p.steps, p.objective, p.keep_base,
                            surrogate)
            head = fine_tune_head(torch.cat([f_ft, embed(features, poisons)]),
                                  torch.cat([y_ft, torch.full((len(poisons),), b)]), p.head_c, seed)
            hit = int(head_predict(head, embed(features, data.x_test[t:t + 1]))[0]) == b
            ok = head_predict(head, f_test) == data.y_test
            acc = Metric.rate("poisoned head: test accuracy", int(ok.sum()), len(ok))
            if worst_acc is None or acc.value < worst_acc.value:
                worst_acc = acc
            with torch.no_grad():
                by_judge = int((judge(poisons).argmax(1) == b).sum())
                by_own = int((module(poisons).argmax(1) == b).sum())
            size = float((poisons - bases).abs().amax() / (hi - lo))
            turned.append(hit)
            accs.append(acc.value)
            judged += by_judge
            own += by_own
            sizes.append(size)
            rows.append({"target (test index)": t, "class": a, "base class": b,
                         "base images (training indices)": pool[near].tolist(), "turned": "yes" if hit else "no",
                         "poisoned head accuracy": acc.text(), "largest perturbation": f"{size:.3f}",
                         "poisons an independent clean model calls the base class": f"{by_judge}/{len(poisons)}",
                         "poisons the victim's own model calls the base class": f"{by_own}/{len(poisons)}"})
        success = measure.success_rate(torch.tensor(turned), "targets turned to the base class")
        n_p = p.poisons * len(turned)
        by_judge = Metric.rate("poisons an independent clean model calls their base class", judged, n_p)
        by_own = Metric.rate("poisons the victim's own clean model calls their base class", own, n_p)
        worst = Metric.rate("lowest poisoned-head test accuracy", round(worst_acc.value * worst_acc.n), worst_acc.n)
        mean = Metric("poisoned heads: mean test accuracy", sum(accs) / len(accs), len(data.y_test))
        metrics = [success, clean_acc, mean, worst, Metric("largest poison perturbation (Linf, share of the range)",
                                                     max(sizes)), by_judge, by_own]
        sev = POISONING.grade(success.ci_low) if success.ci_low > 0 else Severity.LOW
        headline = (f"{p.poisons} clean-label poisons per target (Linf <= {p.eps:g} of the range) turn "
                    f"{success.text()} of target inputs to a chosen class after fine-tuning on frozen features; "
                    f"an independent clean model calls {100 * by_judge.value:.0f}% of the poisons their true class")
        notes = [f"The victim trains a new logistic-regression head (C = {p.head_c:g}) on the audited model's "
                 f"features (the input of its last linear layer) using {len(y_ft)} training points"
                 + (f" ({p.fine_tune_per_class} a class)" if p.fine_tune_per_class else "") + "; each target gets "
                 f"its own {p.poisons} poisons ({p.objective}, {p.steps} steps) and its own fine-tuning.",
                 f"Clean accuracy: the head scores {clean_acc.text()} without poisons; with them, "
                 f"{100 * sum(accs) / len(accs):.1f}% on average and {worst.text()} at worst.",
                 "The independent clean model is an MLP trained from scratch on the training data (another seed "
                 "than the attacker's surrogate, which is an MLP too); the victim's own model shares the features "
                 "the poisons collide in and so calls most of them the target's class."]
        return self.finding(ctx, p, status=Status.OK, severity=sev, headline=headline, metrics=metrics,
                            details={"headline_metric": success.name, "headline_worse": "higher", "table": rows,
                                     "notes": notes, "severity_rule": "lower 95% bound of the share of targets "
                                                                      "turned, on the poisoning ladder"})
