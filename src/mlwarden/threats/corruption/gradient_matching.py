"""Witches' Brew: clean-label poisoning by gradient matching (Geiping et al. 2021, "Witches' brew:
industrial scale data poisoning via gradient matching", ICLR).

Threat model: the attacker knows the victim's training recipe and data, and may perturb a small budget of
training images of one class B within an explicit Linf bound, labels unchanged; the victim trains from
scratch on the poisoned set. For a target test input t of class A, the attacker trains its own surrogate
through the recipe, takes the gradient of the surrogate's loss on (t, B) with respect to its parameters,
and perturbs the poisons (the B images with the largest gradients) so that the gradient of their own
loss points the same way: 1 - cosine similarity of the two, minimised by signed Adam steps with the bound
projected after each, from several random starts (the lowest loss wins). Training on the poisons then
moves the model as a step towards calling t B would. Success: the victim, trained by the recipe from a
seed the attacker did not use, calls t B. Measured over several targets, each with its own poisons and
victim: the share turned, the victims' clean accuracy against the clean model's, and the perturbation."""
from __future__ import annotations

import torch
from pydantic import Field

from ...core import measure
from ...core.finding import Finding, Metric, Severity, Status
from ...core.registry import register
from ...core.severity import POISONING
from ...core.stats import mean_interval
from ...core.target import Access
from ...core.threat import Context, Params, Threat
from .label_flipping import REMEDY


class MatchingParams(Params):
    targets: int = Field(10, ge=1, le=200, description="target test inputs, one at a time")
    budget: float = Field(0.01, gt=0, le=0.2, description="poisoned share of the training set")
    eps: float = Field(0.1, gt=0, le=1, description="Linf bound of a poison's perturbation, share of the range")
    steps: int = Field(240, ge=1, le=5000)
    restarts: int = Field(2, ge=1, le=16)
    surrogates: int = Field(2, ge=1, le=8, description="surrogates trained by the attacker (other seeds than the "
                                                       "victim's), poisons crafted against all")


def _grads(model, loss) -> list[torch.Tensor]:
    params = [p for p in model.parameters() if p.requires_grad]
    return list(torch.autograd.grad(loss, params, create_graph=True))


def alignment(models, x: torch.Tensor, y: torch.Tensor, targets) -> torch.Tensor:
    """1 - cosine between each model's gradient of the poisons' loss and of the target's, averaged."""
    ce = torch.nn.functional.cross_entropy
    out = 0
    for model, (tgt, tnorm) in zip(models, targets):
        pg = _grads(model, ce(model(x), y))
        dot = sum((a * b).sum() for a, b in zip(pg, tgt))
        out = out + 1 - dot / (torch.sqrt(sum((a ** 2).sum() for a in pg)) * tnorm + 1e-12)
    return out / len(models)


def brew(models, target: torch.Tensor, adv_label: int, x: torch.Tensor, y: torch.Tensor, eps: float, low: float,
         high: float, steps: int, restarts: int, seed: int) -> tuple[torch.Tensor, float]:
    """Perturbations of the poisons x (labels y, kept) within eps that align their training gradient with
    the gradient of the target's loss under the adversarial label, on every surrogate in `models` (an
    ensemble transfers better to a victim trained from another seed); returns (poisoned inputs, 1 - cosine)."""
    ce = torch.nn.functional.cross_entropy
    targets = []
    for model in models:
        model.eval()
        tgt = [gr.detach() for gr in _grads(model, ce(model(target[None]), torch.tensor([adv_label])))]
        targets.append((tgt, torch.sqrt(sum((gr ** 2).sum() for gr in tgt))))
    g = torch.Generator().manual_seed(seed)
    best, best_loss = x, float("inf")
    for _ in range(restarts):
        delta = ((torch.rand(x.shape, generator=g) * 2 - 1) * eps).requires_grad_(True)
        opt = torch.optim.Adam([delta], lr=eps / 10)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, [int(steps * f) for f in (0.375, 0.625, 0.833)], 0.1)
        for _ in range(steps):
            loss = alignment(models, (x + delta).clamp(low, high), y, targets)
            opt.zero_grad()
            delta.grad, = torch.autograd.grad(loss, delta)
            delta.grad.sign_()
            opt.step()
            sched.step()
            with torch.no_grad():
                delta.copy_(((x + delta).clamp(low, high) - x).clamp(-eps, eps))
        xp = (x + delta).clamp(low, high).detach()
        final = float(alignment(models, xp, y, targets).detach())
        if final < best_loss:
            best, best_loss = xp.detach(), final
    return best, best_loss


def largest_gradients(model, x: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k points whose loss gradient (parameters) is largest: the poisons Geiping et al. pick."""
    norms = []
    for i in range(len(x)):
        loss = torch.nn.functional.cross_entropy(model(x[i:i + 1]), y[i:i + 1])
        gr = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad])
        norms.append(float(torch.sqrt(sum((a ** 2).sum() for a in gr))))
    return torch.tensor(norms).argsort(descending=True)[:k]


@register
class GradientMatching(Threat):
    """Witches' Brew (Geiping et al. 2021): clean-label poisons whose gradient matches a target's."""

    name = "gradient-matching"
    family = "model-corruption"
    title = "Clean-label poisons that turn a chosen input of a model trained from scratch (gradient matching)"
    needs = Access.LABELS
    modalities = ("image", "tabular")
    atlas = ["AML.T0020"]
    Params = MatchingParams
    profiles = {"quick": {"targets": 5, "steps": 120, "restarts": 1}}
    remedy = REMEDY
    needs_recipe = True
    in_default_audit = False   # retrains the victim from scratch per target


    def run(self, ctx: Context, p: MatchingParams) -> Finding:
        data, c, seed = ctx.data, ctx.data.n_classes, ctx.seed
        recipe = ctx.recipe.with_(data_filter=None)
        lo, hi = data.space.low, data.space.high
        eps = p.eps * (hi - lo)
        surrogates = [recipe.fit(data.x_train, data.y_train, c, seed=seed + 7 + i) for i in range(p.surrogates)]
        surrogate = surrogates[0]                                                  # the attacker's own
        clean = recipe.fit(data.x_train, data.y_train, c, seed=seed)              # the victim, unpoisoned
        ok_clean = measure.correct(clean, data.x_test, data.y_test)
        clean_acc = Metric.rate("clean model: test accuracy", int(ok_clean.sum()), len(ok_clean))
        with torch.no_grad():
            logits = surrogate(data.x_test)
        candidates = torch.nonzero(ok_clean & (logits.argmax(1) == data.y_test)).flatten()
        g = torch.Generator().manual_seed(seed)
        order = candidates[torch.randperm(len(candidates), generator=g)][:p.targets]
        k = max(1, round(p.budget * len(data.y_train)))
        turned, accs, rows, losses, shifts, worst, chosen_for = [], [], [], [], [], None, {}
        for t in order.tolist():
            ctx.check_time()
            a = int(data.y_test[t])
            second = logits[t].clone()
            second[a] = -float("inf")
            b = int(second.argmax())                                   # the surrogate's runner-up for t
            if b not in chosen_for:                                    # per class, not per target
                pool = torch.nonzero(data.y_train == b).flatten()
                chosen_for[b] = pool[largest_gradients(surrogate, data.x_train[pool], data.y_train[pool],
                                                       min(k, len(pool)))]
            chosen = chosen_for[b]
            poisons, loss = brew(surrogates, data.x_test[t], b, data.x_train[chosen], data.y_train[chosen], eps, lo,
                                 hi, p.steps, p.restarts, seed + t)
            x = data.x_train.clone()
            x[chosen] = poisons
            victim = recipe.fit(x, data.y_train, c, seed=seed)
            with torch.no_grad():
                hit = int(victim(data.x_test[t:t + 1]).argmax(1)) == b
                shift = float(victim(data.x_test[t:t + 1]).softmax(1)[0, b] - clean(data.x_test[t:t + 1]).softmax(1)[0, b])
            shifts.append(shift)
            ok = measure.correct(victim, data.x_test, data.y_test)
            acc = Metric.rate("poisoned model: test accuracy", int(ok.sum()), len(ok))
            if worst is None or acc.value < worst.value:
                worst = acc
            turned.append(hit)
            accs.append(acc.value)
            losses.append(loss)
            rows.append({"target (test index)": t, "class": a, "adversarial class": b, "poisons": len(chosen),
                         "turned": "yes" if hit else "no", "victim accuracy": acc.text(),
                         "gradient alignment (1 - cos)": f"{loss:.3f}",
                         "change of the target's adversarial-class probability": f"{shift:+.3f}"})
        success = measure.success_rate(torch.tensor(turned), "targets turned to the adversarial class")
        worst = Metric.rate("lowest poisoned-model test accuracy", round(worst.value * worst.n), worst.n)
        m, m_lo, m_hi = mean_interval(shifts)
        moved = Metric("mean change of the target's adversarial-class probability (poisoned - clean victim)", m,
                       len(shifts), m_lo, m_hi, "probability")
        metrics = [success, moved, clean_acc, worst,
                   Metric("poison perturbation bound (Linf, share of the range)", p.eps)]
        sev = POISONING.grade(success.ci_low) if success.ci_low > 0 else Severity.LOW
        headline = (f"{k} clean-label poisons ({100 * p.budget:g}% of the training set, Linf <= {p.eps:g}) turn "
                    f"{success.text()} of targets of a model trained from scratch to the attacker's class")
        notes = [f"Each target gets its own poisons (the {k} images of the adversarial class with the largest "
                 f"gradients, {p.steps} steps, {p.restarts} restarts, crafted on a surrogate trained with another "
                 f"seed) and its own victim, trained through the recipe ({recipe.name}) from scratch.",
                 f"Clean accuracy: {clean_acc.text()} without poisons; {100 * sum(accs) / len(accs):.1f}% on "
                 f"average with them, {worst.text()} at worst."]
        return self.finding(ctx, p, status=Status.OK, severity=sev, headline=headline, metrics=metrics,
                            details={"headline_metric": success.name, "headline_worse": "higher", "table": rows,
                                     "notes": notes, "severity_rule": "lower 95% bound of the share of targets "
                                                                      "turned, on the poisoning ladder"})
