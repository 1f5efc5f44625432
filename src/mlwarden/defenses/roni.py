"""Reject On Negative Impact (RONI; Nelson et al. 2008, "Exploiting Machine Learning to Subvert Your Spam
Filter", LEET '08, section 5.1; Barreno et al. 2010, "The security of machine learning", section 5.1).

Each incoming training message, attack mail and legitimate mail alike, is judged by its impact: over
`trials` pairs of a small training set T and a quiz set Q drawn from the defender's trusted calibration
mail, the filter is trained on T and on T plus the message, and the change in its accuracy on Q is
averaged (a verdict is correct when ham is ham and spam is spam; unsure counts as wrong). A message whose
impact falls below the threshold is kept out of the training mail. The threshold is calibrated, as in ART's
RONIDefense: the median minus three standard deviations of the impacts of the trusted messages themselves,
or a fixed harm (`threshold`, a share of the quiz set).

Every message is judged against the same trials, so a message's impact depends on nothing else in the
training mail: it is computed once and remembered (identical attack copies cost one evaluation)."""
from __future__ import annotations

import hashlib

import numpy as np
import torch
from pydantic import Field

from ..core.defense import Defense
from ..core.errors import UserError
from ..core.files import write_file
from ..core.finding import Metric
from ..core.registry import register
from ..core.threat import Params
from ..text.filters import FilterRecipe
from ..text.messages import MODALITY, decode
from ..text.spambayes import HAM, SPAM


def impacts(make, texts: list[str], labels: np.ndarray, trials) -> np.ndarray:
    """Mean change in quiz accuracy (a share of the quiz set) when each message joins each trial's training
    set. `make()` returns an untrained filter; `trials` is a list of (T texts, T labels, Q texts, Q labels)."""
    out = np.zeros(len(texts))
    for t_texts, t_labels, q_texts, q_labels in trials:
        want = np.where(q_labels == 1, SPAM, HAM)
        base = (make().fit(t_texts, t_labels).verdicts(q_texts) == want).mean()
        for i, (text, y) in enumerate(zip(texts, labels)):
            flt = make().fit(t_texts + [text], np.append(t_labels, y))
            out[i] += (flt.verdicts(q_texts) == want).mean() - base
    return out / len(trials)


def _stratified_pair(labels: np.ndarray, n_train: int, n_quiz: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint training and quiz sets drawn at random, each holding at least one ham and one spam (a filter
    cannot be trained, nor its harm measured, on one class); the labels hold at least two of each."""
    idx = rng.permutation(len(labels))
    ham, spam = idx[labels[idx] == 0], idx[labels[idx] == 1]
    seeds = [[ham[0], spam[0]], [ham[1], spam[1]]]
    rest = [i for i in idx if i not in {ham[0], spam[0], ham[1], spam[1]}]
    train = np.array(seeds[0] + rest[:n_train - 2])
    quiz = np.array(seeds[1] + rest[n_train - 2:n_train - 2 + n_quiz - 2])
    return train, quiz


# RONI's own check: a threshold calibrated on trusted messages of which fewer than max(this many, this share)
# changed the quiz accuracy rests on too few impacts to tell harm from noise
MIN_MOVED, MIN_MOVED_SHARE = 5, 0.05


class RoniFilter:
    """The sanitizer in the recipe's data_filter: `keep_mask(x, y)` says which encoded messages RONI keeps."""

    def __init__(self, make, trusted: list[str], trusted_labels: np.ndarray, trials: int, train_size: int,
                 quiz_size: int, threshold: float | None, seed: int):
        rng = np.random.default_rng(seed)
        if len(trusted) < train_size + quiz_size:
            raise UserError(f"roni: {len(trusted)} trusted messages cannot make a training set of {train_size} and a "
                            f"quiz set of {quiz_size}; lower train_size or quiz_size, or raise trusted")
        if np.bincount(trusted_labels, minlength=2).min() < 2:
            raise UserError("roni: the trusted messages must hold at least two ham and two spam")
        self.make = make
        self.trials = []
        for _ in range(trials):
            t, q = _stratified_pair(trusted_labels, train_size, quiz_size, rng)
            self.trials.append(([trusted[i] for i in t], trusted_labels[t], [trusted[i] for i in q], trusted_labels[q]))
        self._memo: dict[bytes, float] = {}
        self._trusted, self._trusted_labels = trusted, trusted_labels
        self._threshold, self._rule = None, None
        self.spread: float | None = None   # the calibration impacts' standard deviation (None: fixed threshold)
        self.moved: int | None = None      # trusted messages whose mean impact is not zero (None: not calibrated)
        self.n_trusted = len(trusted)
        if threshold is not None:
            self._threshold, self._rule = -threshold, f"fixed: a harm of more than {threshold:g} of the quiz set"

    def _calibrate(self) -> None:
        """The calibrated threshold, computed the first time it is needed (it retrains the filter trials x
        trusted times): choosing the defence, which checks its settings, costs nothing."""
        if self._threshold is None:
            cal = self.impact(self._trusted, self._trusted_labels)
            self.spread = float(cal.std())
            self.moved = int((np.abs(cal) > 1e-12).sum())
            self._threshold = float(np.median(cal) - 3 * cal.std())
            self._rule = (f"calibrated: median - 3 std of the impacts of the {len(self._trusted)} trusted messages "
                          f"({self._threshold:+.3f})")

    @property
    def threshold(self) -> float:
        self._calibrate()
        return self._threshold

    @property
    def rule(self) -> str:
        self._calibrate()
        return self._rule

    def impact(self, texts: list[str], labels: np.ndarray) -> np.ndarray:
        keys = [hashlib.sha256(f"{int(y)}\x00{t}".encode()).digest() for t, y in zip(texts, labels)]
        todo = {k: (t, y) for k, t, y in zip(keys, texts, labels) if k not in self._memo}
        if todo:
            vals = impacts(self.make, [t for t, _ in todo.values()], np.array([y for _, y in todo.values()]),
                           self.trials)
            self._memo.update(zip(todo, vals.tolist()))
        return np.array([self._memo[k] for k in keys])

    def keep_mask(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self.impact(decode(x), y.numpy()) >= self.threshold)

    def __call__(self, x: torch.Tensor, y: torch.Tensor):
        keep = self.keep_mask(x, y)
        return x[keep], y[keep]

    def __repr__(self) -> str:
        return f"RoniFilter({len(self.trials)} trials, {self.rule})"


class RoniParams(Params):
    trusted: int | None = Field(None, ge=10, description="training messages the defender has checked by hand (the "
                                "calibration mail the trials are drawn from); unset: 500, or half the training "
                                "mail when that is less")
    trials: int = Field(5, ge=1, le=50, description="training/quiz set pairs each message is judged on")
    train_size: int = Field(20, ge=2, description="messages in each trial's training set")
    quiz_size: int = Field(50, ge=2, description="messages in each trial's quiz set")
    threshold: float | None = Field(None, gt=0, lt=1, description="reject a message that costs more than this "
                                    "share of the quiz set; unset: calibrated on the trusted mail")


def trusted_count(p: RoniParams, n_train: int) -> int:
    return p.trusted if p.trusted is not None else min(500, n_train // 2)


@register
class Roni(Defense):
    """RONI (Nelson et al. 2008): a training message is kept only if it does not hurt a trusted quiz set."""

    name = "roni"
    title = "Reject on negative impact (training-mail sanitizer)"
    kind = "training"
    mitigates = ("spam-dictionary", "spam-focused")
    modalities = (MODALITY,)
    Params = RoniParams
    sweepable = ("threshold", "trusted")

    def check(self, p: RoniParams, data) -> None:
        n = len(data.x_train)
        trusted = trusted_count(p, n)
        if trusted > n:
            raise UserError(f"roni: trusted={trusted} is more than the {n} training messages")
        if p.train_size + p.quiz_size > trusted:
            raise UserError(f"roni: train_size + quiz_size ({p.train_size + p.quiz_size}) is more than the {trusted} "
                            "trusted messages: lower them, or raise trusted")
        if p.train_size < 2 or p.quiz_size < 2:
            raise UserError("roni: train_size and quiz_size must each hold a ham and a spam (2 or more)")

    def defend_recipe(self, recipe, p: RoniParams, data):
        if not isinstance(recipe, FilterRecipe):
            raise UserError("roni sanitizes a spam filter's training mail: the subject must be a spam filter trained "
                            "on labelled messages")
        self.check(p, data)
        rng = np.random.default_rng(0)
        trusted = trusted_count(p, len(data.x_train))
        idx = np.sort(rng.choice(len(data.x_train), trusted, replace=False))
        flt = RoniFilter(recipe.make, decode(data.x_train[idx]), data.y_train[idx].numpy(), p.trials, p.train_size,
                         p.quiz_size, p.threshold, seed=1)
        return recipe.with_(data_filter=flt), {"trusted_messages": trusted}

    def after_training(self, recipe, p: RoniParams) -> dict:
        """The threshold, calibrated while the filter sanitized the training mail."""
        flt = recipe.data_filter
        return {"rule": flt.rule, "threshold": flt.threshold}

    def evaluate(self, subject, hardened, p: RoniParams, ctx) -> dict:
        """What RONI costs on clean mail: the legitimate training messages it rejects (no attack present)."""
        flt = hardened.recipe.data_filter
        keep = flt.keep_mask(ctx.data.x_train, ctx.data.y_train)
        texts = decode(ctx.data.x_train[~keep])
        labels = ctx.data.y_train[~keep].tolist()
        path = ctx.file(ctx.point_name("roni-rejected", ".tsv"))
        write_file(path, "".join(f"{'spam' if y else 'ham'}\t{' '.join(t.split())}\n" for t, y in zip(texts, labels)))
        removed = Metric.rate("clean training messages rejected", int((~keep).sum()), len(keep))
        # (almost) no trusted message moved the quiz accuracy (a model that one message in a trial's training set
        # cannot change, e.g. a fine-tune from fixed weights): the threshold rests on the few that did, or on one
        # value, and says nothing about harm, so what the filter keeps or rejects is no evidence either way
        n_cal = flt.n_trusted
        blind = flt.moved is not None and flt.moved < max(MIN_MOVED, MIN_MOVED_SHARE * n_cal)
        warning = (f"UNRELIABLE: {flt.moved} of the {n_cal} trusted messages changed the quiz accuracy (RONI needs "
                   f"{max(MIN_MOVED, int(np.ceil(MIN_MOVED_SHARE * n_cal)))}: one message barely changes this model's "
                   "answers), so RONI cannot tell harmful messages from others here and what it keeps or rejects is "
                   "no evidence; " if blind else "")
        return {"unreliable": blind, "rejected": vars(removed), "rejected_ham": labels.count(0),
                "rejected_spam": labels.count(1), "rule": flt.rule, "rejected_file": path.name, "files": [path.name],
                "summary": f"{warning}with no attack, it rejects {removed.text()} of the clean training messages "
                           f"({labels.count(0)} ham, {labels.count(1)} spam; listed in {path.name}); threshold "
                           f"{flt.rule}"}
