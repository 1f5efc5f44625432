"""The membership-inference threat: trains reference models once, builds the signal matrix, and scores
every attack from it. Evaluated on the audited model (its train split = members, test split =
non-members) and, pooled, on every reference model leave-one-out (each is also a target whose membership
is known), which gives the thousands of non-members that low-FPR rates need."""
from __future__ import annotations

import time

import numpy as np
import torch
from pydantic import Field

from ...core.finding import Check, Metric, Severity, Status
from ...core.severity import MEMBERSHIP
from ...core.target import Access
from ...core.threat import Context, Params, Threat
from ...core.registry import register
from ...privacy.fix import DP_SGD
from ...privacy.reference_models import train_reference_models
from ...privacy.roc import downsample, summarize
from ...privacy.signals import log_probs, logit_confidence
from ...plots import roc_loglog
from . import lira, loss_attack, rmia, shadow_attack
from .common import AttackInput, equal_counts

ATTACKS = ["loss", "shadow", *lira.VARIANTS, *rmia.VARIANTS]
PRIMARY = "lira-online"
SHOWN = ("loss", "lira-online", "rmia-online")  # metrics listed for these and the strongest attack


def run_attack(name: str, a: AttackInput, seed: int) -> np.ndarray:
    if name == "loss":
        return loss_attack.score(a)
    if name == "shadow":
        return shadow_attack.score(a, seed)
    if name in lira.VARIANTS:
        online, per_example = lira.VARIANTS[name]
        return lira.score(a, online, per_example)
    return rmia.score(a, rmia.VARIANTS[name])


def _has_network(target) -> bool:
    if not target.access.allows(Access.WHITE_BOX):
        return False
    try:
        return target.module is not None
    except (PermissionError, AttributeError, NotImplementedError):
        return False


class Mp(Params):
    n_reference: int = Field(8, ge=2, le=256, description="reference models, even; each example IN for half")
    attacks: list[str] = Field(default_factory=lambda: list(ATTACKS))
    pooled: bool = Field(True, description="also evaluate every reference model leave-one-out")
    temperature: float = Field(1.0, gt=0, le=100, description="softmax temperature of the signal (2 helps against a "
                               "saturated softmax and hurt a mildly overfit MLP: docs/threats.md)")
    logits: bool = Field(False, description="compute the signal from the target's logits when white-box access "
                         "gives them (float64), not from its float32 probabilities")


@register
class MembershipInference(Threat):
    """Membership inference: LOSS, shadow models, LiRA and RMIA from one signal matrix of reference models."""
    name = "membership-inference"
    family = "data-extraction"
    title = "Membership inference (was this record in the training set?)"
    needs = Access.SCORES
    atlas = ["AML.T0024.000"]
    Params = Mp
    profiles = {"quick": {"n_reference": 8}, "standard": {"n_reference": 16}, "thorough": {"n_reference": 64}}
    remedy = DP_SGD

    def run(self, ctx: Context, p: Mp):
        unknown = set(p.attacks) - set(ATTACKS)
        if unknown or p.n_reference % 2:
            bad = f"unknown attacks {sorted(unknown)}" if unknown else "n_reference must be even"
            return self.finding(ctx, p, status=Status.FAILED, severity=Severity.INFO, headline=bad, error=bad)
        d = ctx.data
        x = torch.cat([d.x_train, d.x_test])
        y = torch.cat([d.y_train, d.y_test])
        yn = y.numpy()
        target_in = np.r_[np.ones(len(d.x_train), bool), np.zeros(len(d.x_test), bool)]
        from_logits = p.logits and _has_network(ctx.target)
        logp = [log_probs(ctx.target, x, temperature=p.temperature, logits=from_logits)]
        checks, notes = [], []
        attacks = list(p.attacks)
        t_ref = 0.0
        if ctx.recipe is None:
            attacks = [a for a in attacks if a == "loss"]
            notes.append("no recipe: only the LOSS attack ran (set model.recipe to train reference models)")
            in_mask = target_in[None]
        else:
            t0 = time.monotonic()
            refs = train_reference_models(ctx.recipe, x, y, d.n_classes, p.n_reference, ctx.seed, ctx.backend,
                                          ctx.check_time)
            t_ref = time.monotonic() - t0
            logp += [log_probs(m, x, temperature=p.temperature, logits=from_logits) for m in refs.models]
            in_mask = np.vstack([target_in[None], refs.in_mask])
        logp = np.stack(logp)
        if len(logp) > 1:
            checks.append(self._match_check(logp, yn, target_in))
        phi = logit_confidence(logp, yn)
        refs_idx = list(range(1, len(logp)))
        pool = p.pooled and len(refs_idx) > 2
        # the inputs (reference slices, equal-count masks) are built once per attacked model, not per attack;
        # each reference model is attacked with the others as its references; the audited model is left out
        # of the pool because its training set size, and so its calibration, differs
        target_input = self._input(logp, phi, in_mask, yn, 0, refs_idx)
        pool_inputs = [self._input(logp, phi, in_mask, yn, m, [k for k in refs_idx if k != m])
                       for m in refs_idx] if pool else []
        pool_members = in_mask[refs_idx].reshape(-1) if pool else None
        per_attack = {}
        for name in attacks:
            ctx.check_time()
            per_attack[name] = {"target": summarize(run_attack(name, target_input, ctx.seed), target_in)}
            if pool:
                pooled = np.concatenate([run_attack(name, a, ctx.seed) for a in pool_inputs])
                per_attack[name]["pooled"] = summarize(pooled, pool_members)
        notes.append(f"Signal: softmax at temperature {p.temperature:g} in float64, from "
                     + ("the logits (white-box access)" if from_logits else "the float32 probabilities the target "
                        "returns (a probability float32 rounds to 1 carries no membership signal)"))
        n_models = len(refs_idx) if pool else 1
        return self._finding(ctx, p, per_attack, checks, notes, n_models, t_ref)

    @staticmethod
    def _input(logp, phi, in_mask, y, m, refs) -> AttackInput:
        return AttackInput(logp[m], phi[m], logp[refs], phi[refs], in_mask[refs], y,
                           equal_counts(in_mask[refs], seed=m))

    @staticmethod
    def _tpr1(metrics, attack: str) -> Metric:
        return next(m for m in metrics if m.name == f"{attack} TPR at 1% FPR")

    @staticmethod
    def _match_check(logp, y, target_in) -> Check:
        """Reference models must be trained like the target, or the calibration is wrong."""
        acc = (logp.argmax(-1) == y[None]).astype(float)
        target_acc = acc[0, ~target_in].mean()
        ref_acc = acc[1:].mean()  # reference models on the whole pool, members and not
        target_all = acc[0].mean()
        gap = abs(ref_acc - target_all)
        return Check("reference-models-match-target", bool(gap > 0.15),
                     f"pool accuracy: target {target_all:.3f} (test {target_acc:.3f}), reference models "
                     f"{ref_acc:.3f}; a gap over 0.15 means the recipe does not reproduce the target",
                     "Give the recipe that trained this model (--recipe, with its epochs and learning rate), so "
                     "that the reference models reach its accuracy; the attack is calibrated on them.")

    def _finding(self, ctx, p, per_attack, checks, notes, n_models, t_ref):
        fired = any(c.fired for c in checks)
        metrics, table = [], []
        key = "pooled" if n_models > 1 else "target"
        for name, s in per_attack.items():
            scope = s[key]
            ms = scope.metrics(name)
            for m in ms:
                m.reliable = m.reliable and not fired
            metrics += [m for m in ms if "balanced" not in m.name]
            t1 = s["target"].tpr_at[0.01]
            table.append({"attack": name, "auc": scope.auc, "balanced_accuracy": scope.balanced_accuracy,
                          "tpr_at_1pct": scope.tpr_at[0.01][0] / scope.tpr_at[0.01][1],
                          "tpr_at_0.1pct": scope.tpr_at[0.001][0] / scope.tpr_at[0.001][1],
                          "n_members": scope.n_members, "n_nonmembers": scope.n_nonmembers,
                          "target_only_auc": s["target"].auc, "target_only_tpr_at_1pct": t1[0] / t1[1],
                          "target_only_nonmembers": s["target"].n_nonmembers})
        primary = PRIMARY if PRIMARY in per_attack else next(iter(per_attack))
        metrics += [m for m in per_attack[primary]["target"].metrics(f"{primary} (audited model only)")
                    if "balanced" not in m.name]
        # the strongest attack at 1% FPR, by the lower end of its interval, decides the severity
        best_name = max(per_attack, key=lambda n: self._tpr1(metrics, n).ci_low)
        best = self._tpr1(metrics, best_name)
        shown = set(SHOWN) | {best_name}  # the table in details holds every attack
        metrics = [m for m in metrics if m.name.split(" ")[0] in shown]
        path = ctx.evidence_path("mia-roc.png")
        roc_loglog(path, {n: (s[key].fpr, s[key].tpr) for n, s in per_attack.items()},
                   title=f"membership inference, {n_models} reference models pooled" if n_models > 1
                   else "membership inference, audited model")
        lo = best.ci_low
        sev = MEMBERSHIP.grade(lo)
        scope = (f"pooled over {n_models} models trained by the recipe" if n_models > 1 else "audited model only")
        head = (f"{best.name}: {best.text()} ({scope}, {per_attack[best_name][key].n_nonmembers} non-members; "
                f"chance is 1%)")
        if fired:
            head = "unreliable: reference models do not match the target; " + head
        status = Status.UNRELIABLE if fired else Status.OK
        return self.finding(ctx, p, status=status, severity=Severity.INFO if fired else sev, headline=head,
                            metrics=metrics, checks=checks, evidence=[ctx.rel(path)],
                            details={"table": table, "notes": notes, "models_pooled": n_models,
                                     "reference_training_s": t_ref, "primary": primary, "best": best_name,
                                     "roc": {n: downsample(s[key].fpr, s[key].tpr) for n, s in per_attack.items()}})
