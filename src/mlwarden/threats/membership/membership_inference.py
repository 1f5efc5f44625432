"""The membership-inference threat: trains reference models once, builds the signal matrix, and scores
every attack from it. Evaluated on the audited model (its train split = members, test split =
non-members) and, pooled, on every reference model leave-one-out (each is also a target whose membership
is known), which gives the thousands of non-members that low-FPR rates need."""
from __future__ import annotations

import time

import numpy as np
from scipy.stats import mannwhitneyu, nhypergeom, norm
import torch
from pydantic import Field, model_validator

from ...core.finding import Check, Metric, Severity, Status
from ...core.severity import MEMBERSHIP
from ...core.target import Access
from ...core.threat import Context, Params, Threat
from ...core.registry import register
from ...core.cache import tensor_digest
from ...core.stats import auc_interval, difference_interval
from ...privacy.fix import DP_SGD
from ...privacy.reference_models import train_reference_models
from ...privacy.roc import downsample, summarize
from ...privacy.signals import log_probs, logit_confidence
from ...privacy.views import MAX_VIEWS, SHIFTS, apply_view, image_views
from ...plots import roc_loglog
from . import lira, loss_attack, rmia, shadow_attack
from .common import AttackInput, Pool, equal_counts

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


MAX_SCORES = 200_000   # audited-model scores a report keeps for `mlwarden diff` (float32: 5.3 bytes each)


def _scores_record(s: np.ndarray, members: np.ndarray) -> dict:
    """The primary attack's scores on the audited model, members and non-members apart, as little-endian float32
    in base64 (finite: NaN as the lowest score, as summarize() ranks it): `mlwarden diff` bootstraps the
    difference of two runs' TPR at 1% FPR from them. Empty past MAX_SCORES points."""
    import base64
    if len(s) > MAX_SCORES:
        return {"members": "", "nonmembers": ""}
    s = np.nan_to_num(np.asarray(s, dtype=np.float64), nan=-np.inf)
    s = np.clip(s, -3e38, 3e38).astype("<f4")
    return {k: base64.b64encode(s[mask].tobytes()).decode("ascii")
            for k, mask in (("members", members), ("nonmembers", ~members))}


def _has_network(target) -> bool:
    if not target.access.allows(Access.WHITE_BOX):
        return False
    try:
        return target.module is not None
    except (PermissionError, AttributeError, NotImplementedError):
        return False


class PoolParams(Params):
    """What every membership threat takes: the reference models and the attacks."""
    n_reference: int = Field(8, ge=2, le=256, description="reference models, even; each example IN for half")
    attacks: list[str] = Field(default_factory=lambda: list(ATTACKS))
    pooled: bool = Field(True, description="also evaluate every reference model leave-one-out")


class SignalParams(Params):
    """How scores become the signal."""
    temperature: float = Field(2.0, gt=0, le=100, description="softmax temperature of the signal; 2 measured best "
                               "on MNIST and on saturated models, level elsewhere (docs/threats.md)")
    logits: bool = Field(True, description="compute the signal from the target's logits when white-box access "
                         "gives them (float64), not from its float32 probabilities")


class ViewParams(Params):
    """Which perturbed copies of an image are queried."""
    augmentations: int = Field(1, ge=1, le=MAX_VIEWS, description="image data: query each point as is and shifted "
                               "by 1 px (up to 9 views; 18 with flips) and average every attack's score over them")
    flips: bool = Field(False, description="with augmentations: also query the left-right mirror images")

    @model_validator(mode="after")
    def _views_exist(self):
        if self.augmentations > len(SHIFTS) and not self.flips:
            raise ValueError(f"augmentations: {self.augmentations} views need flips = true (there are {len(SHIFTS)} "
                             "shifts without them)")
        return self


class Mp(ViewParams, SignalParams, PoolParams):
    pass


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
        unknown = set(p.attacks) - set(self.ATTACKS)
        if unknown or p.n_reference % 2:
            bad = f"unknown attacks {sorted(unknown)}" if unknown else "n_reference must be even"
            return self.finding(ctx, p, status=Status.FAILED, severity=Severity.INFO, headline=bad, error=bad)
        checks, notes = [], []
        pool = self.pool(ctx, p)
        x, y, target_in = pool.x, pool.y, pool.target_in
        if target_in.all() or not target_in.any():
            bad = (f"the pool has {int(target_in.sum())} members and {int((~target_in).sum())} non-members of the "
                   "audited model; both are needed")
            return self.finding(ctx, p, status=Status.FAILED, severity=Severity.INFO, headline=bad, error=bad)
        signal = self.signal_fn(ctx, p, pool, notes)
        logp, yn = signal(ctx.target, y)     # (views, N, C); the labels the attacks score
        logp = [logp]
        attacks = list(p.attacks)
        t_ref, ref_identity = 0.0, None
        if ctx.recipe is None:
            attacks = [a for a in attacks if a in self.NO_REFERENCES]
            if not attacks:
                why = (f"no recipe, and none of the chosen attacks ({', '.join(p.attacks) or 'none'}) runs without "
                       f"reference models: add {' or '.join(self.NO_REFERENCES)}, or set model.recipe")
                return self.finding(ctx, p, status=Status.SKIPPED, severity=Severity.INFO, headline=f"skipped: {why}")
            notes.append(f"no recipe: only {', '.join(self.NO_REFERENCES)} ran (set model.recipe to train reference "
                         "models)")
            in_mask = target_in[None]
        else:
            t0 = time.monotonic()
            refs = train_reference_models(ctx.recipe, x, y, pool.n_classes, p.n_reference, ctx.seed, ctx.backend,
                                          ctx.check_time, subset=pool.subset, input_shape=pool.input_shape,
                                          digest=pool.digest)
            t_ref = time.monotonic() - t0
            ref_identity = {**refs.identity, "cached": p.n_reference - refs.trained}
            notes.append(f"Reference models: {p.n_reference}, each trained through the recipe ({ctx.recipe.name}) on "
                         "half of the pool" + (f" ({ref_identity['cached']} from the cache)" if ref_identity["cached"]
                                               else ""))
            logp += [signal(m, y)[0] for m in refs.models]
            in_mask = np.vstack([target_in[None], refs.in_mask])
        logp = np.stack(logp)                # (models, views, N, C)
        if len(logp) > 1:
            checks.append(self.match_check(logp[:, 0], yn, target_in, in_mask))
        # the members are mlwarden's guess: is there a sign of them? (from scores; a label-only signal is no fit)
        if self.checks_split and not ctx.data.split.startswith("given") and ctx.target.access.allows(Access.SCORES):
            checks.append(self.split_check(logp[0, 0], yn, target_in, ctx.data.split))
        phi = logit_confidence(logp, yn)
        refs_idx = list(range(1, len(logp)))
        pooled = p.pooled and len(refs_idx) > 2
        # the inputs (reference slices, equal-count masks) are built once per attacked model, not per attack;
        # each reference model is attacked with the others as its references; the audited model is left out
        # of the pool because its training set size, and so its calibration, differs
        target_input = self._inputs(logp, phi, in_mask, yn, 0, refs_idx)
        pool_inputs = [self._inputs(logp, phi, in_mask, yn, m, [k for k in refs_idx if k != m])
                       for m in refs_idx] if pooled else []
        pool_members = in_mask[refs_idx].reshape(-1) if pooled else None
        per_attack, target_scores = {}, {}
        for name in attacks:
            ctx.check_time()
            s = self.score(name, target_input, ctx.seed)
            per_attack[name] = {"target": summarize(s, target_in)}
            target_scores[name] = s
            if pooled:
                s = np.concatenate([self.score(name, a, ctx.seed) for a in pool_inputs])
                per_attack[name]["pooled"] = summarize(s, pool_members)
            members = pool_members if pooled else target_in
            for group, mask in pool.groups.items():   # the group's members against the group's non-members
                g = np.tile(mask, len(s) // len(mask))
                if members[g].any() and not members[g].all():
                    per_attack[name][group] = summarize(s[g], members[g])
        n_models = len(refs_idx) if pooled else 1
        scores = self.PRIMARY if self.PRIMARY in target_scores else next(iter(target_scores))
        audited = {"attack": scores, "data": pool.digest or tensor_digest(pool.x, pool.y),
                   **_scores_record(target_scores[scores], target_in)}
        return self._finding(ctx, p, per_attack, self._overrule(checks, per_attack), notes, n_models, t_ref,
                             ref_identity, audited)

    @staticmethod
    def _overrule(checks: list[Check], per_attack: dict) -> list[Check]:
        """An attack that beats chance on the audited model itself shows that the guessed members are its
        members, as only a model trained on them allows: the split check then does not fire, and says why.
        Beating chance, for each attack: more members above its 1% FPR threshold (the (floor(0.01 n) + 1)-th
        highest non-member score, as summarize() sets it) than members no different from the non-members would
        put there (exact: that count is then negative hypergeometric, the threshold's own noise included), or
        its AUC above 0.5 by its one-sided normal bound (Hanley & McNeil); each at 5% over every number tried
        (Bonferroni over two per attack)."""
        out = []
        for c in checks:
            if c.name == "member-split-unverified" and c.fired:
                tried = 2 * len(per_attack)
                alpha = 0.05 / max(tried, 1)
                z = float(norm.ppf(1 - alpha))   # one-sided: only an AUC above 0.5 overrules
                beats = {}
                for n, s in per_attack.items():
                    t = s["target"]
                    k, members = t.tpr_at[0.01]
                    above = int(0.01 * t.n_nonmembers) + 1   # the threshold is this many non-members down
                    p_value = float(nhypergeom(members + t.n_nonmembers, members, above).sf(k - 1)) if k else 1.0
                    if p_value < alpha:
                        shown = f"p = {p_value:.1g}" if p_value >= 1e-9 else "p < 1e-9"
                        beats[f"{n} TPR at 1% FPR"] = (-p_value, f"{k} of {members} members above the threshold, "
                                                                  f"{shown} were they no different")
                    auc_low = auc_interval(t.auc, t.n_members, t.n_nonmembers, z)[0]
                    if auc_low > 0.5:
                        beats[f"{n} AUC"] = (-float(norm.sf((t.auc - 0.5) / max((t.auc - auc_low) / z, 1e-12))),
                                             f"{t.auc:.3f}, from {auc_low:.3f}")
                if beats:
                    name, (_, seen) = max(beats.items(), key=lambda kv: kv[1][0])
                    c = Check(c.name, False, f"{c.detail}; but {name} beats chance on the audited model ({seen}; "
                                             f"at 5% over {tried} numbers, {len(per_attack)} attacks), which only "
                                             "a model trained on these members allows", c.advice)
            out.append(c)
        return out

    def pool(self, ctx: Context, p: Mp) -> Pool:
        """Members: the data's train split (the audited model trained on it); non-members: its test split."""
        d = ctx.data
        return Pool(torch.cat([d.x_train, d.x_test]), torch.cat([d.y_train, d.y_test]),
                    np.r_[np.ones(len(d.x_train), bool), np.zeros(len(d.x_test), bool)], d.n_classes)

    ATTACKS, PRIMARY, SHOWN = ATTACKS, PRIMARY, SHOWN
    NO_REFERENCES = ("loss",)   # the attacks that run without reference models
    # the pool's members are the data's train split and the signal the model's class log-probabilities, so a
    # split mlwarden made itself is checked (split_check); a subclass with another pool or signal says False
    checks_split = True

    def signal_fn(self, ctx: Context, p: Mp, pool: Pool, notes: list[str]):
        """Returns signal(model, y) -> ((views, N, C) log-probabilities, the labels attacks score them at),
        for the audited target and for each reference model alike; appends what it is to `notes`."""
        x = pool.x
        from_logits = p.logits and _has_network(ctx.target)
        views = self._views(ctx, p, notes)
        fill = ctx.data.space.low
        notes.append(f"Signal: softmax at temperature {p.temperature:g} in float64, from "
                     + ("the logits (white-box access)" if from_logits else "the float32 probabilities the target "
                        "returns (a probability float32 rounds to 1 carries no membership signal)"))

        def signal(model, y):
            lp = np.stack([log_probs(model, x if v is None else apply_view(x, v, fill), temperature=p.temperature,
                                     logits=from_logits) for v in views])
            return lp, y.numpy()
        return signal

    @staticmethod
    def _views(ctx: Context, p: Mp, notes: list[str]) -> list:
        if p.augmentations == 1 and not p.flips:
            return [None]
        if ctx.data.modality != "image" or len(ctx.data.input_shape) != 3:
            notes.append("augmentations apply to images; this data was queried as is")
            return [None]
        views = image_views(p.augmentations, p.flips)
        notes.append(f"Augmentation queries: every point queried {len(views)} ways ("
                     + ", ".join(v.describe() for v in views) + "); each attack's score averaged over them")
        return views

    @staticmethod
    def _inputs(logp, phi, in_mask, y, m, refs) -> list[AttackInput]:
        """One attack input per view of the points."""
        valid = equal_counts(in_mask[refs], seed=m)
        return [AttackInput(logp[m, v], phi[m, v], logp[refs, v], phi[refs, v], in_mask[refs], y, valid)
                for v in range(logp.shape[1])]

    @staticmethod
    def score(name: str, inputs: list[AttackInput], seed: int) -> np.ndarray:
        """The attack's score averaged over the views (for LiRA, with one variance per view, the mean of the
        log-likelihood ratios ranks like the likelihood ratio of the views taken together)."""
        return np.mean([run_attack(name, a, seed) for a in inputs], axis=0)

    @staticmethod
    def _tpr1(metrics, attack: str) -> Metric:
        return next(m for m in metrics if m.name == f"{attack} TPR at 1% FPR")

    @staticmethod
    def match_check(logp, y, target_in, in_mask) -> Check:
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

    @staticmethod
    def split_check(lp: np.ndarray, y: np.ndarray, target_in: np.ndarray, split: str) -> Check:
        """When mlwarden split the data itself, its train part is a guess at the model's members. A model trained
        on it fits its members better than the rest: higher accuracy on them (Newcombe's interval of the
        difference above zero), or a higher log-probability of the true label (the AUC of members against
        non-members above 0.5 by its 95% interval, Hanley & McNeil 1982). With neither, there is no sign that
        these are the members: the model leaks nothing, or it was trained on another split and many
        "non-members" are members; the numbers cannot tell which. `lp`: the audited model's (N, C) signal."""
        true_lp = lp[np.arange(len(y)), y]
        mem, non = true_lp[target_in], true_lp[~target_in]
        n1, n2 = len(mem), len(non)
        # AUC as the Mann-Whitney U over n1 n2 (ties half): ranks take an infinite or NaN (as lowest) score
        mem, non = (np.nan_to_num(a, nan=-np.inf) for a in (mem, non))
        auc = float(mannwhitneyu(mem, non).statistic) / (n1 * n2)
        low = auc_interval(auc, n1, n2)[0]
        right = lp.argmax(1) == y
        k1, k2 = int(right[target_in].sum()), int(right[~target_in].sum())
        gap, gap_low, _ = difference_interval(k2, n2, k1, n1)   # members' accuracy minus non-members'
        fired = bool(low <= 0.5 and gap_low <= 0)
        seen = (f"accuracy {k1 / n1:.1%} against {k2 / n2:.1%}, difference {100 * gap:+.1f} points, 95% CI from "
                f"{100 * gap_low:+.1f}; AUC of its true-label log-probability {auc:.3f}, 95% CI from {low:.3f}; "
                f"n={n1} members, {n2} non-members")
        return Check("member-split-unverified", fired,
                     f"the data was {split.split(';')[0]}; the audited model fits its 'members' no better than its "
                     f"'non-members' beyond noise ({seen}): it leaks nothing, or it was trained on another split, "
                     "and the numbers cannot tell which" if fired else
                     f"the data was {split.split(';')[0]}; the audited model fits its 'members' better than its "
                     f"'non-members' ({seen}), as a model trained on that split does",
                     "Give the split the model was trained on: --data train.csv --test-data test.csv (or an .npz "
                     "with x_train, y_train, x_test, y_test).")

    def _finding(self, ctx, p, per_attack, checks, notes, n_models, t_ref, ref_identity, audited):
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
            for group in (k for k in s if k not in ("target", "pooled")):
                g = s[group]
                table[-1].update({f"{group}_auc": g.auc, f"{group}_tpr_at_1pct": g.tpr_at[0.01][0] / g.tpr_at[0.01][1]})
        primary = self.PRIMARY if self.PRIMARY in per_attack else next(iter(per_attack))
        metrics += [m for m in per_attack[primary]["target"].metrics(f"{primary} (audited model only)")
                    if "balanced" not in m.name]
        # the strongest attack at 1% FPR, by the lower end of its interval, decides the severity
        best_name = max(per_attack, key=lambda n: self._tpr1(metrics, n).ci_low)
        best = self._tpr1(metrics, best_name)
        for group in (k for k in per_attack[best_name] if k not in ("target", "pooled")):
            metrics += [m for m in per_attack[best_name][group].metrics(f"{best_name} on {group}") if "AUC" in m.name]
        shown = set(self.SHOWN) | {best_name, primary}  # the table in details holds every attack; the primary's
        # numbers on the audited model are what `mlwarden diff` compares
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
            head = f"unreliable ({', '.join(c.name for c in checks if c.fired)}): " + head
        status = Status.UNRELIABLE if fired else Status.OK
        return self.finding(ctx, p, status=status, severity=Severity.INFO if fired else sev, headline=head,
                            metrics=metrics, checks=checks, evidence=[ctx.rel(path)],
                            details={"table": table, "notes": notes, "models_pooled": n_models,
                                     "reference_training_s": t_ref, "primary": primary, "best": best_name,
                                     "reference_models": ref_identity, "audited_scores": audited,
                                     "roc": {n: downsample(s[key].fpr, s[key].tpr) for n, s in per_attack.items()}})
